"""RocketMQ's message encodings on the remoting wire (sans-I/O: bytes in, values out).

Three layouts, all big-endian, as RocketMQ's `MessageDecoder` reads and writes them:

The stored-message format (a PULL_MESSAGE body is several of these back to back; version 1, the one every
4.x client decodes):

    i32 total size (of this whole record) | i32 magic code (-626843481) | i32 body CRC | i32 queue id
    i32 flag | i64 queue offset | i64 physical offset | i32 sys flag | i64 born timestamp
    born host: 4-byte IPv4 + i32 port, or 16-byte IPv6 + i32 port when sys flag has BORNHOST_V6
    i64 store timestamp | store host (the same, by STOREHOSTADDRESS_V6) | i32 reconsume times
    i64 prepared transaction offset | i32 body length, body | u8 topic length, topic
    i16 properties length, properties

The batch format (the body of SEND_BATCH_MESSAGE, `MessageDecoder.encodeMessages`): records of

    i32 total size | i32 magic code (unused) | i32 body CRC (unused) | i32 flag | i32 body length, body
    i16 properties length, properties

Properties are `name \\x01 value \\x02` repeated (UTF-8). An offset message id (`offsetMsgId`) is the store
host's 4 address bytes, its port as 4 bytes and the physical offset as 8 bytes, in upper-case hex (32
characters).

Invariants: `encode_stored` of a `MessageExt` whose fields are in range decodes back to the same values
(a property test checks it with a decoder written from the description above); `decode_batch` and
`parse_offset_msg_id` raise `MessageFormatError` (one line) on malformed input, never another exception.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "BORNHOST_V6_FLAG",
    "COMPRESSED_FLAG",
    "MAGIC_CODE",
    "MULTI_TAGS_FLAG",
    "NAME_VALUE_SEPARATOR",
    "PROPERTY_SEPARATOR",
    "STOREHOST_V6_FLAG",
    "TRANSACTION_COMMIT_TYPE",
    "TRANSACTION_PREPARED_TYPE",
    "TRANSACTION_ROLLBACK_TYPE",
    "TRANSACTION_TYPE_MASK",
    "BatchItem",
    "MessageExt",
    "MessageFormatError",
    "body_crc",
    "decode_batch",
    "decode_properties",
    "encode_batch",
    "encode_properties",
    "encode_stored",
    "java_string_hash",
    "offset_msg_id",
    "parse_offset_msg_id",
]

MAGIC_CODE = -626843481  # MessageDecoder.MESSAGE_MAGIC_CODE (0xDAA320A7 as a signed int)
NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"

# MessageSysFlag bits
COMPRESSED_FLAG = 0x1
MULTI_TAGS_FLAG = 0x1 << 1
TRANSACTION_PREPARED_TYPE = 0x1 << 2
TRANSACTION_COMMIT_TYPE = 0x2 << 2
TRANSACTION_ROLLBACK_TYPE = 0x3 << 2
TRANSACTION_TYPE_MASK = TRANSACTION_ROLLBACK_TYPE
BORNHOST_V6_FLAG = 0x1 << 4
STOREHOST_V6_FLAG = 0x1 << 5

_HEAD = struct.Struct(">iiiiiqqiq")  # size, magic, crc, queue, flag, queue offset, phys offset, sysflag, born
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_I16 = struct.Struct(">h")
_BATCH_HEAD = struct.Struct(">iiiii")  # size, magic, crc, flag, body length
_MAX_PROPERTIES = 32767  # an i16 length


class MessageFormatError(ValueError):
    """Bytes that are not a valid RocketMQ message encoding, or a value that cannot be encoded."""


Host = tuple[bytes, int]  # (4 or 16 address bytes, port)


@dataclass(frozen=True, slots=True)
class MessageExt:
    """One message in the stored-message format (RocketMQ's `MessageExt`)."""

    topic: str
    body: bytes
    queue_id: int = 0
    flag: int = 0
    queue_offset: int = 0
    commit_log_offset: int = 0
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: Host = (b"\x7f\0\0\x01", 0)
    store_timestamp: int = 0
    store_host: Host = (b"\x7f\0\0\x01", 0)
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0
    properties: Mapping[str, str] = field(default_factory=dict)


def body_crc(body: bytes) -> int:
    """The body CRC RocketMQ stores: CRC-32 of the body with the sign bit cleared (`UtilAll.crc32`)."""
    return zlib.crc32(body) & 0x7FFFFFFF


def java_string_hash(text: str) -> int:
    """Java's `String.hashCode` (over UTF-16 code units, as a signed 32-bit int): RocketMQ's tag hash code."""
    h = 0
    raw = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(raw), 2):
        h = (31 * h + ((raw[i] << 8) | raw[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def encode_properties(properties: Mapping[str, str]) -> str:
    """`name \\x01 value \\x02` for each property (RocketMQ's `messageProperties2String`)."""
    return "".join(f"{k}{NAME_VALUE_SEPARATOR}{v}{PROPERTY_SEPARATOR}" for k, v in properties.items())


def decode_properties(text: str) -> dict[str, str]:
    """The inverse of `encode_properties`; items that are not exactly one name and one value are dropped, as
    RocketMQ's `string2messageProperties` drops them."""
    out: dict[str, str] = {}
    for item in text.split(PROPERTY_SEPARATOR):
        parts = item.split(NAME_VALUE_SEPARATOR)
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def _host(out: list[bytes], host: Host, what: str) -> None:
    addr, port = host
    if len(addr) not in (4, 16):
        raise MessageFormatError(f"the {what} host address has {len(addr)} bytes (4 or 16)")
    out.append(bytes(addr))
    out.append(_I32.pack(port))


def encode_stored(msg: MessageExt) -> bytes:
    """`msg` in the stored-message format; the host fields' sizes set the V6 sys-flag bits (whatever
    `sys_flag` says of them), the total size and body CRC are computed."""
    topic = msg.topic.encode()
    props = encode_properties(msg.properties).encode()
    if not 0 < len(topic) <= 127:
        raise MessageFormatError(f"the topic has {len(topic)} bytes (1..127)")
    if len(props) > _MAX_PROPERTIES:
        raise MessageFormatError(f"the properties are {len(props)} bytes; the limit is {_MAX_PROPERTIES}")
    sys_flag = msg.sys_flag & ~(BORNHOST_V6_FLAG | STOREHOST_V6_FLAG)
    if len(msg.born_host[0]) == 16:
        sys_flag |= BORNHOST_V6_FLAG
    if len(msg.store_host[0]) == 16:
        sys_flag |= STOREHOST_V6_FLAG
    tail: list[bytes] = []
    _host(tail, msg.born_host, "born")
    try:
        tail.append(_I64.pack(msg.store_timestamp))
        _host(tail, msg.store_host, "store")
        tail += (
            _I32.pack(msg.reconsume_times),
            _I64.pack(msg.prepared_transaction_offset),
            _I32.pack(len(msg.body)),
            bytes(msg.body),
            bytes((len(topic),)),
            topic,
            _I16.pack(len(props)),
            props,
        )
        size = _HEAD.size + sum(map(len, tail))
        head = _HEAD.pack(
            size, MAGIC_CODE, body_crc(msg.body), msg.queue_id, msg.flag, msg.queue_offset,
            msg.commit_log_offset, sys_flag, msg.born_timestamp,
        )  # fmt: skip
    except struct.error as exc:
        raise MessageFormatError(f"a numeric field is out of range: {exc}") from None
    return head + b"".join(tail)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One message of a SEND_BATCH_MESSAGE body: its flag, body and properties (topic and queue come from
    the request header)."""

    body: bytes
    flag: int = 0
    properties: Mapping[str, str] = field(default_factory=dict)


def encode_batch(items: list[BatchItem]) -> bytes:
    """The batch layout of `MessageDecoder.encodeMessages` (magic and CRC written as 0, as the client does)."""
    out: list[bytes] = []
    for item in items:
        props = encode_properties(item.properties).encode()
        if len(props) > _MAX_PROPERTIES:
            raise MessageFormatError(f"the properties are {len(props)} bytes; the limit is {_MAX_PROPERTIES}")
        size = _BATCH_HEAD.size + len(item.body) + 2 + len(props)
        out += (_BATCH_HEAD.pack(size, 0, 0, item.flag, len(item.body)), bytes(item.body), _I16.pack(len(props)), props)
    return b"".join(out)


def decode_batch(data: bytes, max_items: int = 1 << 16) -> list[BatchItem]:
    """The messages of a SEND_BATCH_MESSAGE body; `MessageFormatError` if it is not exactly such records."""
    items: list[BatchItem] = []
    pos = 0
    while pos < len(data):
        if len(items) >= max_items:
            raise MessageFormatError(f"the batch has more than {max_items} messages")
        if pos + _BATCH_HEAD.size > len(data):
            raise MessageFormatError(f"a truncated batch record at byte {pos}")
        size, _, _, flag, body_len = _BATCH_HEAD.unpack_from(data, pos)
        end = pos + size
        body_at = pos + _BATCH_HEAD.size
        if body_len < 0 or size < _BATCH_HEAD.size + 2 or end > len(data) or body_at + body_len + 2 > end:
            raise MessageFormatError(f"a batch record at byte {pos} has inconsistent lengths")
        (props_len,) = _I16.unpack_from(data, body_at + body_len)
        props_at = body_at + body_len + 2
        if props_len < 0 or props_at + props_len != end:
            raise MessageFormatError(f"a batch record at byte {pos} has inconsistent lengths")
        try:
            props = decode_properties(data[props_at:end].decode())
        except UnicodeDecodeError:
            raise MessageFormatError(f"the properties of the batch record at byte {pos} are not UTF-8") from None
        items.append(BatchItem(bytes(data[body_at : body_at + body_len]), flag, props))
        pos = end
    return items


def offset_msg_id(host: Host, physical_offset: int) -> str:
    """RocketMQ's offset message id: store host address, port (4 bytes) and physical offset, upper-case hex."""
    addr, port = host
    return (bytes(addr) + struct.pack(">iq", port, physical_offset)).hex().upper()


def parse_offset_msg_id(msg_id: str) -> tuple[str, int, int]:
    """(address, port, physical offset) of an offset message id (IPv4: 32 hex digits, IPv6: 56)."""
    if len(msg_id) not in (32, 56):
        raise MessageFormatError(f"an offset message id has 32 or 56 hex digits, not {len(msg_id)}")
    try:
        raw = bytes.fromhex(msg_id)
    except ValueError:
        raise MessageFormatError("an offset message id is hex digits") from None
    n = len(raw) - 12
    port, offset = struct.unpack_from(">iq", raw, n)
    return str(ipaddress.ip_address(raw[:n])), port, offset
