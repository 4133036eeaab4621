"""Log entry commands: what the broker adapter writes to the replicated log.

Every entry the adapter proposes is one command: `MAGIC (2 bytes) | u8 version=1 | u8 tag | fields`.
Integers are big-endian; `str` is a u16 length plus UTF-8. Entries that do not
start with `MAGIC` (written by someone else on the same log) are ignored by the adapter.

Invariants: the leader stamps every time-dependent value (`now`, epoch ms) into the command before proposing,
so applying a command reads no clock, randomness or local config; `nonce` only lets the proposing process
find its result and never changes replicated state; `decode_command(encode_command(c)) == c`.
A PUT carries a table of per-message metadata (queue, hashes, message id position, ...) that the leader
computes, then the encoded messages back to back, so a message is `data[pos:pos+size]` of its entry, consume
queue records point into the entry without copying the body, and apply never parses message bytes (except
for keys); the table is checked against the entry's size (a mismatch makes the whole entry malformed).
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
    "DeleteGroup",
    "DeleteTopic",
    "EndTransaction",
    "PopReceive",
    "Put",
    "PutHead",
    "Recall",
    "Tick",
    "UpdateGroup",
    "UpdateTopic",
    "decode_command",
    "encode_command",
    "encode_put",
    "put_head",
    "put_view",
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
    POP_RECEIVE_FROM = 9  # POP_RECEIVE plus the leader's first log index
    POP_RECEIVE_END = 10  # POP_RECEIVE_FROM plus `from_end` (written only when it is true)
    UPDATE_TOPIC = 11
    DELETE_TOPIC = 12
    UPDATE_GROUP = 13
    DELETE_GROUP = 14
    RECALL = 15


#: per message of a PUT, written by the leader so that apply never parses message bytes:
#: size, topic index, queue id, tag hash, group hash, delivery ts, flags (bit 0: transaction),
#: offset of the message id inside the message, its length, key count
PUT_META = struct.Struct(">IHiIIqBHHH")
PutMeta = tuple[int, int, int, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Put:
    """A batch of encoded messages. Layout after the common head: u16 topic count, `str` each; u32 message
    count; `PUT_META` per message; then the encoded messages back to back (sizes in their metas)."""

    nonce: int
    now: int
    topics: tuple[str, ...]
    metas: tuple[PutMeta, ...]
    blobs: tuple[bytes, ...]


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
    first_index: int = 0  # the leader's first log index: records pointing before it are passed over, not popped
    from_end: bool = False  # a group new to the topic starts at the end of each queue (see `pop.py`)


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


@dataclass(frozen=True, slots=True)
class UpdateTopic:
    """Create a topic or change it (admin): queue count (never shrinks), message type, permission bits."""

    nonce: int
    now: int
    topic: str
    queue_count: int
    message_type: int
    perm: int


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    nonce: int
    now: int
    topic: str


@dataclass(frozen=True, slots=True)
class UpdateGroup:
    """Create or replace a consumer group's settings (`admin_model.GroupConfig`, field by field)."""

    nonce: int
    now: int
    group: str
    max_attempts: int
    backoff_initial_ms: int
    backoff_max_ms: int
    backoff_multiplier_milli: int
    fifo: bool
    start: int
    start_ms: int


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    nonce: int
    now: int
    group: str


@dataclass(frozen=True, slots=True)
class Recall:
    """Withdraw a delayed message that is still waiting (RocketMQ's RecallMessage)."""

    nonce: int
    now: int
    topic: str
    msg_id: str
    delivery_ms: int


Command = (
    Put | CreateTopic | CommitOffset | PopReceive | Ack | ChangeInvisible | Tick | EndTransaction
    | UpdateTopic | DeleteTopic | UpdateGroup | DeleteGroup | Recall
)  # fmt: skip

# field kinds per command, after the common (nonce, now): q=i64, i=i32, s=str, B=bool, L=list[str]
_FIELDS: dict[type, tuple[Tag, str]] = {
    CreateTopic: (Tag.CREATE_TOPIC, "sii"),
    CommitOffset: (Tag.COMMIT_OFFSET, "ssiq"),
    PopReceive: (Tag.POP_RECEIVE_END, "ssiiiqiqB"),
    Ack: (Tag.ACK, "sL"),
    ChangeInvisible: (Tag.CHANGE_INVISIBLE, "ssq"),
    Tick: (Tag.TICK, ""),
    EndTransaction: (Tag.END_TRANSACTION, "sB"),
    UpdateTopic: (Tag.UPDATE_TOPIC, "siii"),
    DeleteTopic: (Tag.DELETE_TOPIC, "s"),
    UpdateGroup: (Tag.UPDATE_GROUP, "siqqiBiq"),
    DeleteGroup: (Tag.DELETE_GROUP, "s"),
    Recall: (Tag.RECALL, "ssq"),
}
_BY_TAG = {tag: (cls, kinds) for cls, (tag, kinds) in _FIELDS.items()}
_BY_TAG[Tag.POP_RECEIVE] = (PopReceive, "ssiiiqi")  # written before POP_RECEIVE_FROM: first_index 0
_BY_TAG[Tag.POP_RECEIVE_FROM] = (PopReceive, "ssiiiqiq")  # from_end false (how such a receive is written)


def _put_str(out: list[bytes], text: str) -> None:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise CommandError(f"a string field has {len(raw)} bytes; the limit is 65535")
    out += (_U16.pack(len(raw)), raw)


def encode_command(cmd: Command) -> bytes:
    if isinstance(cmd, Put):
        return encode_put(cmd.nonce, cmd.now, cmd.topics, cmd.metas, cmd.blobs)
    tag, kinds = _FIELDS[type(cmd)]
    values = [getattr(cmd, name) for name in cmd.__dataclass_fields__][2:]
    if isinstance(cmd, PopReceive) and not cmd.from_end:  # the older layout: replicas that predate the flag read it
        tag, kinds, values = Tag.POP_RECEIVE_FROM, kinds[:-1], values[:-1]
    out = [_HEAD.pack(MAGIC, VERSION, tag), _Q.pack(cmd.nonce), _Q.pack(cmd.now)]
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
            else:  # "L"
                out.append(_U32.pack(len(value)))
                for text in value:
                    _put_str(out, text)
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
    if tag == Tag.PUT:
        nonce, now = _Q.unpack_from(data, _HEAD.size)[0], _Q.unpack_from(data, _HEAD.size + 8)[0]
        topics, metas, start = put_view(data)
        blobs = []
        for meta in metas:
            blobs.append(data[start : start + meta[0]])
            start += meta[0]
        return Put(nonce, now, tuple(topics), tuple(metas), tuple(blobs))
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
        else:  # "L"
            count = _U32.unpack_from(data, pos)[0]
            pos += 4
            values.append(tuple(text() for _ in range(count)))
    if pos != len(data):
        raise CommandError(f"{len(data) - pos} trailing bytes after the command")
    return cls(*values)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class PutHead:
    """Just the common head of a PUT (apply reads the rest with `put_view`)."""

    nonce: int
    now: int


def put_head(data: bytes) -> PutHead:
    if len(data) < _HEAD.size + 16:
        raise CommandError("truncated PUT")
    return PutHead(_Q.unpack_from(data, _HEAD.size)[0], _Q.unpack_from(data, _HEAD.size + 8)[0])


def put_view(data: bytes) -> tuple[list[str], list[PutMeta], int]:
    """(topics, metas, position of the first message) of a PUT entry, without copying the messages.
    Raises `CommandError` unless the metas' sizes cover the rest of the entry exactly."""
    try:
        pos = _HEAD.size + 16
        (count,) = _U16.unpack_from(data, pos)
        pos += 2
        topics = []
        for _ in range(count):
            (n,) = _U16.unpack_from(data, pos)
            if pos + 2 + n > len(data):
                raise CommandError("truncated topic")
            topics.append(data[pos + 2 : pos + 2 + n].decode())
            pos += 2 + n
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        end = pos + count * PUT_META.size
        if end > len(data):
            raise CommandError("truncated message table")
        metas: list[PutMeta] = list(PUT_META.iter_unpack(data[pos:end]))
    except (struct.error, UnicodeDecodeError) as exc:
        raise CommandError(f"malformed PUT: {exc}") from None
    if end + sum(m[0] for m in metas) != len(data):
        raise CommandError("the message sizes do not match the PUT entry")
    if any(m[1] >= len(topics) for m in metas):
        raise CommandError("a message names a topic the PUT does not list")
    return topics, metas, end


def encode_put(nonce: int, now: int, topics: Sequence[str], metas: Sequence[PutMeta], blobs: Sequence[bytes]) -> bytes:
    """The PUT entry (the hot path: no dataclass)."""
    out = [_HEAD.pack(MAGIC, VERSION, Tag.PUT), _Q.pack(nonce), _Q.pack(now), _U16.pack(len(topics))]
    for topic in topics:
        _put_str(out, topic)
    out.append(_U32.pack(len(metas)))
    try:
        out += [PUT_META.pack(*meta) for meta in metas]
    except struct.error as exc:
        raise CommandError(f"a numeric field is out of range: {exc}") from None
    out += blobs
    return b"".join(out)
