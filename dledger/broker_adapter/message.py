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
    "StampEncoder",
    "decode_message",
    "encode_message",
    "encode_stamped",
    "scan_header",
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
    MIXED = 4  # takes every type (auto-created topics, or created so)


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
    return encode_stamped(msg, msg.queue_id, msg.msg_id, msg.born_timestamp, msg.store_timestamp)[0]


def encode_stamped(msg: Message, queue_id: int, msg_id: str, born: int, stored: int) -> tuple[bytes, int, int]:
    """`msg` encoded with the fields the leader stamps replaced; also (offset, length) of the id bytes."""
    topic, tags, ident, group = msg.topic.encode(), msg.tags.encode(), msg_id.encode(), msg.message_group.encode()
    if max(len(topic), len(tags), len(ident), len(group)) > MAX_STR:
        raise MessageFormatError(f"a string field is longer than {MAX_STR} bytes")
    try:
        out = [
            _HEAD.pack(
                MESSAGE_VERSION,
                _FLAG_TRANSACTION if msg.transaction else 0,
                queue_id,
                born,
                stored,
                msg.delivery_timestamp,
            ),
            _U16.pack(len(topic)),
            topic,
            _U16.pack(len(tags)),
            tags,
            _U16.pack(len(ident)),
            ident,
            _U16.pack(len(group)),
            group,
        ]
    except struct.error as exc:
        raise MessageFormatError(f"a numeric field is out of range: {exc}") from None
    if msg.keys or msg.properties:
        if len(msg.keys) > MAX_STR or len(msg.properties) > MAX_STR:
            raise MessageFormatError("too many keys or properties")
        out.append(_U16.pack(len(msg.keys)))
        for key in msg.keys:
            _str(out, key)
        out.append(_U16.pack(len(msg.properties)))
        for name, value in msg.properties.items():
            _str(out, name)
            _str(out, value)
    else:
        out.append(b"\0\0\0\0")
    out += (_U32.pack(len(msg.body)), bytes(msg.body))
    return b"".join(out), _HEAD.size + 6 + len(topic) + len(tags), len(ident)


class StampEncoder:
    """`encode_stamped` for a batch: the encoded topic / tags / group parts (and their hashes) are built once
    per distinct (topic, tags, group), which is what makes the leader's per-message cost small."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str, str], tuple[bytes, bytes, int, int]] = {}

    def _shape(self, msg: Message) -> tuple[bytes, bytes, int, int]:
        key = (msg.topic, msg.tags, msg.message_group)
        parts = self._parts.get(key)
        if parts is None:
            topic, tags, group = (x.encode() for x in key)
            if max(len(topic), len(tags), len(group)) > MAX_STR:
                raise MessageFormatError(f"a string field is longer than {MAX_STR} bytes")
            parts = (
                _U16.pack(len(topic)) + topic + _U16.pack(len(tags)) + tags,
                _U16.pack(len(group)) + group,
                tag_hash(msg.tags),
                tag_hash(msg.message_group),
            )
            self._parts[key] = parts
        return parts

    def encode(
        self, msg: Message, queue_id: int, msg_id: str, born: int, stored: int
    ) -> tuple[bytes, int, int, int, int]:
        """(encoded message, id offset, id length, tag hash, group hash)."""
        mid1, mid2, th, gh = self._shape(msg)
        ident = msg_id.encode()
        if len(ident) > MAX_STR or msg.keys or msg.properties:
            return (*encode_stamped(msg, queue_id, msg_id, born, stored), th, gh)
        try:
            head = _HEAD.pack(
                MESSAGE_VERSION, _FLAG_TRANSACTION if msg.transaction else 0, queue_id, born, stored,
                msg.delivery_timestamp,
            )  # fmt: skip
        except struct.error as exc:
            raise MessageFormatError(f"a numeric field is out of range: {exc}") from None
        body = msg.body
        blob = b"".join((head, mid1, _U16.pack(len(ident)), ident, mid2, b"\0\0\0\0", _U32.pack(len(body)), body))
        return blob, _HEAD.size + len(mid1) + 2, len(ident), th, gh


def _text(data: bytes, pos: int) -> tuple[str, int]:
    (n,) = _U16.unpack_from(data, pos)
    pos += 2
    end = pos + n
    if end > len(data):
        raise MessageFormatError("truncated message")
    return data[pos:end].decode(), end


def scan_header(data: bytes, pos: int) -> tuple[int, int, bool, str, str, str, str, list[str]]:
    """(queue_id, delivery_ts, transaction, topic, tags, msg_id, message_group, keys) of the message encoded
    at `data[pos:]`, without copying its body or properties (the applier's hot path)."""
    try:
        (flags, queue_id, _, _, delivery), (topic, tags, msg_id, group), keys, _ = _read_head(data, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise MessageFormatError(f"malformed message: {exc}") from None
    return queue_id, delivery, bool(flags & _FLAG_TRANSACTION), topic, tags, msg_id, group, keys


def _read_head(
    data: bytes, pos: int
) -> tuple[tuple[int, int, int, int, int], tuple[str, str, str, str], list[str], int]:
    """The fixed header (flags, queue, born, stored, delivery), the four strings (topic, tags, message id,
    message group) and the keys of the message at `data[pos:]`, and the position after them."""
    version, flags, queue_id, born, stored, delivery = _HEAD.unpack_from(data, pos)
    if version != MESSAGE_VERSION:
        raise MessageFormatError(f"unknown message version {version}")
    topic, p = _text(data, pos + _HEAD.size)
    tags, p = _text(data, p)
    msg_id, p = _text(data, p)
    group, p = _text(data, p)
    (count,) = _U16.unpack_from(data, p)
    p += 2
    keys = []
    for _ in range(count):
        key, p = _text(data, p)
        keys.append(key)
    return (flags, queue_id, born, stored, delivery), (topic, tags, msg_id, group), keys, p


def decode_message(data: bytes) -> Message:
    """The inverse of `encode_message`."""
    try:
        (flags, queue_id, born, stored, delivery), (topic, tags, msg_id, group), keys, p = _read_head(data, 0)
        (count,) = _U16.unpack_from(data, p)
        p += 2
        properties = {}
        for _ in range(count):
            name, p = _text(data, p)
            properties[name], p = _text(data, p)
        (size,) = _U32.unpack_from(data, p)
        p += 4
    except (struct.error, UnicodeDecodeError) as exc:
        raise MessageFormatError(f"malformed message: {exc}") from None
    if p + size != len(data):
        raise MessageFormatError("truncated message" if p + size > len(data) else "trailing bytes after the message")
    return Message(
        topic=topic,
        body=data[p:],
        queue_id=queue_id,
        tags=tags,
        keys=tuple(keys),
        properties=properties,
        born_timestamp=born,
        store_timestamp=stored,
        msg_id=msg_id,
        message_group=group,
        delivery_timestamp=delivery,
        transaction=bool(flags & _FLAG_TRANSACTION),
    )
