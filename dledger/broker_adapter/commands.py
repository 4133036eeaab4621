"""Log entry commands: what the broker adapter writes to the replicated log.

Every entry the adapter proposes is one command: `MAGIC (2 bytes) | u8 version=1 | u8 tag | fields`.
Integers are big-endian; `str` is a u16 length plus UTF-8; `blob` a u32 length plus bytes. Entries that do not
start with `MAGIC` (written by someone else on the same log) are ignored by the adapter.

Invariants: the leader stamps every time-dependent value (`now`, epoch ms) into the command before proposing,
so applying a command reads no clock, randomness or local config; `nonce` only lets the proposing process
find its result and never changes replicated state; `decode_command(encode_command(c)) == c`.
A PUT carries encoded messages back to back (each a `blob`), so a message is `data[pos:pos+size]` of its
entry and consume queue records can point into the entry without copying the body.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAGIC",
    "Ack",
    "ChangeInvisible",
    "Command",
    "CommandError",
    "CommitOffset",
    "CreateTopic",
    "EndTransaction",
    "PopReceive",
    "Put",
    "Tick",
    "decode_command",
    "encode_command",
    "put_positions",
]

MAGIC = b"\xd1\xb7"
VERSION = 1
_HEAD = struct.Struct(">2sBB")
_Q = struct.Struct(">q")
_I = struct.Struct(">i")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class CommandError(ValueError):
    """Bytes with the adapter's magic that are not a valid command."""


class Tag(enum.IntEnum):
    """Command tags; stored in the log: never renumber."""

    PUT = 1
    CREATE_TOPIC = 2
    COMMIT_OFFSET = 3
    POP_RECEIVE = 4
    ACK = 5
    CHANGE_INVISIBLE = 6
    TICK = 7
    END_TRANSACTION = 8


@dataclass(frozen=True, slots=True)
class Put:
    nonce: int
    now: int
    messages: tuple[bytes, ...]  # encoded messages


@dataclass(frozen=True, slots=True)
class CreateTopic:
    nonce: int
    now: int
    topic: str
    queue_count: int
    message_type: int


@dataclass(frozen=True, slots=True)
class CommitOffset:
    nonce: int
    now: int
    group: str
    topic: str
    queue_id: int
    offset: int


@dataclass(frozen=True, slots=True)
class PopReceive:
    nonce: int
    now: int
    group: str
    topic: str
    queue_id: int  # -1: any queue, starting at start_queue
    start_queue: int
    max_count: int
    invisible_ms: int
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Ack:
    nonce: int
    now: int
    group: str
    handles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangeInvisible:
    nonce: int
    now: int
    group: str
    handle: str
    invisible_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    nonce: int
    now: int


@dataclass(frozen=True, slots=True)
class EndTransaction:
    nonce: int
    now: int
    msg_id: str
    commit: bool


Command = Put | CreateTopic | CommitOffset | PopReceive | Ack | ChangeInvisible | Tick | EndTransaction

# field kinds per command, after the common (nonce, now): q=i64, i=i32, s=str, B=bool, L=list[str], M=list[blob]
_FIELDS: dict[type, tuple[Tag, str]] = {
    Put: (Tag.PUT, "M"),
    CreateTopic: (Tag.CREATE_TOPIC, "sii"),
    CommitOffset: (Tag.COMMIT_OFFSET, "ssiq"),
    PopReceive: (Tag.POP_RECEIVE, "ssiiiqi"),
    Ack: (Tag.ACK, "sL"),
    ChangeInvisible: (Tag.CHANGE_INVISIBLE, "ssq"),
    Tick: (Tag.TICK, ""),
    EndTransaction: (Tag.END_TRANSACTION, "sB"),
}
_BY_TAG = {tag: (cls, kinds) for cls, (tag, kinds) in _FIELDS.items()}


def _put_str(out: list[bytes], text: str) -> None:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise CommandError(f"a string field has {len(raw)} bytes; the limit is 65535")
    out += (_U16.pack(len(raw)), raw)


def encode_command(cmd: Command) -> bytes:
    tag, kinds = _FIELDS[type(cmd)]
    out = [_HEAD.pack(MAGIC, VERSION, tag), _Q.pack(cmd.nonce), _Q.pack(cmd.now)]
    values = [getattr(cmd, name) for name in cmd.__dataclass_fields__][2:]
    try:
        for kind, value in zip(kinds, values, strict=True):
            if kind == "q":
                out.append(_Q.pack(value))
            elif kind == "i":
                out.append(_I.pack(value))
            elif kind == "B":
                out.append(b"\x01" if value else b"\x00")
            elif kind == "s":
                _put_str(out, value)
            elif kind == "L":
                out.append(_U32.pack(len(value)))
                for text in value:
                    _put_str(out, text)
            else:  # "M"
                out.append(_U32.pack(len(value)))
                for blob in value:
                    out += (_U32.pack(len(blob)), blob)
    except struct.error as exc:
        raise CommandError(f"a numeric field is out of range: {exc}") from None
    return b"".join(out)


def is_command(data: bytes) -> bool:
    return data[:2] == MAGIC


def decode_command(data: bytes) -> Command:
    """Raises `CommandError` for a truncated entry, an unknown version or tag, or trailing bytes."""
    try:
        return _decode(data)
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise CommandError(f"malformed command: {exc}") from None


def _decode(data: bytes) -> Command:
    magic, version, tag = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise CommandError(f"not a version-{VERSION} adapter command")
    if tag not in _BY_TAG:
        raise CommandError(f"unknown command tag {tag}")
    cls, kinds = _BY_TAG[tag]
    pos = _HEAD.size
    nonce, now = _Q.unpack_from(data, pos)[0], _Q.unpack_from(data, pos + 8)[0]
    pos += 16
    values: list[object] = [nonce, now]

    def text() -> str:
        nonlocal pos
        n = _U16.unpack_from(data, pos)[0]
        if pos + 2 + n > len(data):
            raise CommandError("truncated string")
        value = data[pos + 2 : pos + 2 + n].decode()
        pos += 2 + n
        return value

    for kind in kinds:
        if kind == "q":
            values.append(_Q.unpack_from(data, pos)[0])
            pos += 8
        elif kind == "i":
            values.append(_I.unpack_from(data, pos)[0])
            pos += 4
        elif kind == "B":
            values.append(data[pos] == 1)
            pos += 1
        elif kind == "s":
            values.append(text())
        elif kind == "L":
            count = _U32.unpack_from(data, pos)[0]
            pos += 4
            values.append(tuple(text() for _ in range(count)))
        else:
            blobs = []
            for size_pos, size in put_positions(data, pos):
                blobs.append(data[size_pos : size_pos + size])
            values.append(tuple(blobs))
            pos = len(data)
    if pos != len(data):
        raise CommandError(f"{len(data) - pos} trailing bytes after the command")
    return cls(*values)  # type: ignore[no-any-return]


PUT_BODY_START = _HEAD.size + 16


def put_positions(data: bytes, pos: int = PUT_BODY_START) -> list[tuple[int, int]]:
    """(position, size) of each message blob of a PUT entry, without copying them."""
    count = _U32.unpack_from(data, pos)[0]
    pos += 4
    out = []
    for _ in range(count):
        size = _U32.unpack_from(data, pos)[0]
        pos += 4
        if pos + size > len(data):
            raise CommandError("truncated message in a PUT")
        out.append((pos, size))
        pos += size
    if pos != len(data):
        raise CommandError("trailing bytes after a PUT")
    return out


def encode_put_parts(nonce: int, now: int, messages: Sequence[bytes]) -> bytes:
    """`encode_command(Put(nonce, now, messages))` without building the dataclass (the hot path)."""
    out = [_HEAD.pack(MAGIC, VERSION, Tag.PUT), _Q.pack(nonce), _Q.pack(now), _U32.pack(len(messages))]
    for blob in messages:
        out += (_U32.pack(len(blob)), blob)
    return b"".join(out)
