"""JSON as RocketMQ's fastjson writes and reads it.

fastjson writes a map with numeric keys (a `HashMap<Long, String>` such as `BrokerData.brokerAddrs`) with
the keys unquoted: `{"brokerAddrs":{0:"10.0.0.1:10911"}}`, which strict JSON parsers refuse. `loads` reads
that dialect (and standard JSON); `dumps` writes it when `standard` is false and standard JSON otherwise
(RocketMQ's NameServer answers a 4.9.4+ client, or one that asks with `acceptStandardJsonOnly`, with
standard JSON). A map keyed by a bean (`HashMap<MessageQueue, OffsetWrapper>` in ConsumeStats and
TopicStatsTable) has each key written as an object, `{{"brokerName":"b","queueId":0,"topic":"T"}:{...}}`:
`dumps` writes an `ObjectKey` key so (as a quoted string of that object when `standard`).

Invariants: `loads` raises only `ValueError` (json's `JSONDecodeError` is one) on bad input, never reads a
quoted string's content as a key, and gives standard JSON the same value as `json.loads` (it parses that
with `json.loads` alone, the common case of every remoting header, and rewrites bare keys only when that
fails); `dumps` is compact (no spaces), keeps dict order, writes text as UTF-8, and gives the same bytes as
`json.dumps(..., separators=(",", ":"), ensure_ascii=False)` for a value whose keys are all text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ObjectKey", "dumps", "loads"]


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """A map key that fastjson writes as an object (a bean such as MessageQueue): its fields in order."""

    fields: tuple[tuple[str, Any], ...]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BARE_KEY = re.compile(r"([{,]\s*)(-?[0-9A-Za-z_$.]+)(\s*:)")
_MAX_DEPTH = 64
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def loads(data: bytes | str) -> Any:
    """Parse fastjson's dialect: standard JSON plus bare (unquoted) object keys."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text at byte {exc.start}") from None
    else:
        text = data
    if text.count("{") + text.count("[") <= _MAX_DEPTH:  # cannot nest deeper: try it as standard JSON
        try:
            return json.loads(text)
        except ValueError:
            pass  # perhaps fastjson's bare keys
    pieces: list[str] = []
    pos = 0
    for m in _STRING.finditer(text):
        pieces.append(_BARE_KEY.sub(r'\1"\2"\3', text[pos : m.start()]))
        pieces.append(m.group())
        pos = m.end()
    pieces.append(_BARE_KEY.sub(r'\1"\2"\3', text[pos:]))
    if _depth("".join(p for p in pieces if not p.startswith('"'))) > _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    return json.loads("".join(pieces))


def _depth(structure: str) -> int:
    deepest = depth = 0
    for ch in structure:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def dumps(value: Any, *, standard: bool = False) -> bytes:
    """Compact JSON; int keys stay unquoted unless `standard` (fastjson's default output)."""
    if _str_keys_only(value):
        try:
            return _COMPACT.encode(value).encode("utf-8")
        except (TypeError, ValueError):
            pass  # a value json refuses: `_write` raises what it raises
    out: list[str] = []
    _write(value, out, standard)
    return "".join(out).encode("utf-8")


def _str_keys_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _str_keys_only(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_str_keys_only(v) for v in value)
    return True


def _write(value: Any, out: list[str], standard: bool) -> None:
    if isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            if isinstance(key, ObjectKey):
                text = dumps(dict(key.fields), standard=standard).decode()
                out.append(json.dumps(text, ensure_ascii=False) if standard else text)
                out.append(":")
                _write(item, out, standard)
                continue
            if isinstance(key, bool) or not isinstance(key, int | str):
                raise TypeError(f"JSON object keys must be str or int, got {key!r}")
            if isinstance(key, int) and not standard:
                out.append(str(key))
            else:
                out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _write(item, out, standard)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, standard)
        out.append("]")
    else:
        out.append(json.dumps(value, ensure_ascii=False))
