"""The message model and its compact, versioned binary encoding (never pickle).

Layout of an encoded message, version 1 (big-endian):

    u8 version=1 | u8 flags (bit 0: transaction) | i32 queue_id | i64 born_ts | i64 store_ts | i64 delivery_ts
    str topic | str tags | str msg_id | str message_group
    u16 key count, str each | u16 property count, (str key, str value) each | u32 body length, body

where `str` is a u16 byte length and UTF-8 bytes. Invariants: `decode_message(encode_message(m)) == m` for
every valid `m` (a property test checks it); a decoder rejects unknown versions and truncated or trailing
bytes with `MessageFormatError`, never with a crash or a partial message. Times are epoch milliseconds.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "MESSAGE_VERSION",
    "Message",
    "MessageFormatError",
    "MessageType",
    "decode_message",
    "encode_message",
    "tag_hash",
]

MESSAGE_VERSION = 1
_FLAG_TRANSACTION = 0x01
_HEAD = struct.Struct(">BBiqqq")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
MAX_STR = 0xFFFF


class MessageFormatError(ValueError):
    """Bytes that are not a valid encoded message (or a message that cannot be encoded)."""


class MessageType(enum.IntEnum):
    """A topic's message type (RocketMQ 5 `TopicMessageType`). Stored in the log: never renumber."""

    NORMAL = 0
    FIFO = 1
    DELAY = 2
    TRANSACTION = 3


@dataclass(frozen=True, slots=True)
class Message:
    """One message. `queue_id == -1` lets the store choose the queue; `delivery_timestamp > 0` delays it."""

    topic: str
    body: bytes
    queue_id: int = -1
    tags: str = ""
    keys: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    born_timestamp: int = 0
    store_timestamp: int = 0
    msg_id: str = ""
    message_group: str = ""
    delivery_timestamp: int = 0
    transaction: bool = False

    def replace(self, **changes: object) -> Message:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return Message(**values)


def tag_hash(tags: str) -> int:
    """The 32-bit hash of a tag kept in consume queue records (0 for no tag); reads re-check the tag itself."""
    return zlib.crc32(tags.encode()) if tags else 0


def _str(out: list[bytes], text: str) -> None:
    raw = text.encode()
    if len(raw) > MAX_STR:
        raise MessageFormatError(f"a string field has {len(raw)} bytes; the limit is {MAX_STR}")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def encode_message(msg: Message) -> bytes:
    """The version-1 encoding of `msg`; raises `MessageFormatError` if a field cannot be represented."""
    try:
        head = _HEAD.pack(
            MESSAGE_VERSION,
            _FLAG_TRANSACTION if msg.transaction else 0,
            msg.queue_id,
            msg.born_timestamp,
            msg.store_timestamp,
            msg.delivery_timestamp,
        )
    except struct.error as exc:
        raise MessageFormatError(f"a numeric field is out of range: {exc}") from None
    out = [head]
    for text in (msg.topic, msg.tags, msg.msg_id, msg.message_group):
        _str(out, text)
    if len(msg.keys) > MAX_STR or len(msg.properties) > MAX_STR:
        raise MessageFormatError("too many keys or properties")
    out.append(_U16.pack(len(msg.keys)))
    for key in msg.keys:
        _str(out, key)
    out.append(_U16.pack(len(msg.properties)))
    for name, value in msg.properties.items():
        _str(out, name)
        _str(out, value)
    out.append(_U32.pack(len(msg.body)))
    out.append(bytes(msg.body))
    return b"".join(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MessageFormatError("truncated message")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def text(self) -> str:
        try:
            return self.take(self.u16()).decode()
        except UnicodeDecodeError:
            raise MessageFormatError("a string field is not UTF-8") from None


def decode_message(data: bytes) -> Message:
    """The inverse of `encode_message`."""
    if len(data) < _HEAD.size:
        raise MessageFormatError("truncated message header")
    version, flags, queue_id, born, stored, delivery = _HEAD.unpack_from(data, 0)
    if version != MESSAGE_VERSION:
        raise MessageFormatError(f"unknown message version {version}")
    r = _Reader(data, _HEAD.size)
    topic, tags, msg_id, group = r.text(), r.text(), r.text(), r.text()
    keys = tuple(r.text() for _ in range(r.u16()))
    properties = {}
    for _ in range(r.u16()):
        name = r.text()
        properties[name] = r.text()
    body = r.take(_U32.unpack(r.take(4))[0])
    if r.pos != len(data):
        raise MessageFormatError(f"{len(data) - r.pos} trailing bytes after the message")
    return Message(
        topic=topic,
        body=body,
        queue_id=queue_id,
        tags=tags,
        keys=keys,
        properties=properties,
        born_timestamp=born,
        store_timestamp=stored,
        msg_id=msg_id,
        message_group=group,
        delivery_timestamp=delivery,
        transaction=bool(flags & _FLAG_TRANSACTION),
    )
