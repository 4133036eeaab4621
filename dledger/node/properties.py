"""Java-style properties files, as RocketMQ's broker.conf is written: `key=value`, `key: value` or
`key value`; `#` / `!` comments; a trailing backslash continues a line; `\\t \\n \\\\ \\= \\:` and `\\uXXXX`
escapes.

Invariant: a file that cannot be read, is not UTF-8 or has a line without a key raises `ConfigError` naming
the file (and the line); nothing else is checked here (the keys and values are the caller's).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable

from dledger.net.addresses import ConfigError

__all__ = ["load_properties"]


def load_properties(path: str | pathlib.Path) -> dict[str, str]:
    """Read a Java-style properties file: `key=value`, `key: value` or `key value`; `#` / `!` comments;
    a trailing backslash continues a line; `\\t \\n \\\\ \\= \\:` and `\\uXXXX` escapes."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    props: dict[str, str] = {}
    for lineno, logical in _logical_lines(text):
        key, value = _split_property(logical)
        if not key:
            raise ConfigError(f"config file {str(path)!r} line {lineno}: no key in {logical!r}")
        props[_unescape(key)] = _unescape(value)
    return props


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    pending: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if not pending:
            start = lineno
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: continued
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def _split_property(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t":
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(" \t")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t")
    return key, rest.rstrip()


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)
