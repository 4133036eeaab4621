"""How RocketMQ's remoting view of a message maps onto the store's `Message` model, and back.

- Queue offsets are the store's consume queue offsets per (topic, queue id), as in RocketMQ.
- The physical offset (`commitLogOffset`, inside `offsetMsgId`) is `log index << 32 | byte position` of the
  message in its log entry: stable on every replica, unique per message (a batch is one entry), growing in
  log order. `split_physical_offset` inverts it.
- A remoting message's `TAGS`, `KEYS` (space-separated) and `UNIQ_KEY` properties become the store's tags,
  keys and message id, so the gRPC face shows them as its tag, keys and message id (and the other way round).
  RocketMQ's other system properties (`PGROUP`, `WAIT`, `RETRY_TOPIC`, ...) are kept under the reserved
  `__dl.p.` prefix: remoting consumers get them back, the gRPC face never shows them as user properties.
  The message `flag` and the reconsume count travel as reserved properties too.
- A compressed body (sys flag bit 0, zlib) is stored inflated, so both protocols read the same bytes; a body
  a gRPC producer sent gzip-encoded is inflated when served through remoting.
- Delay levels map to a delivery time by `messageDelayLevel` (default "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m
  8m 9m 10m 20m 30m 1h 2h"); a level above the last is the last.

Invariants: `to_message_ext(stored)` never raises for a message the store holds (a value the stored format
cannot carry is dropped or clamped, never a crash); `from_remoting` raises `RemotingMessageError` (one line,
with the response code to answer, MESSAGE_ILLEGAL) for a message the store must not take.
"""

from __future__ import annotations

import functools
import ipaddress
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from dledger.broker_adapter.message import Message
from dledger.broker_adapter.results import StoredMessage
from dledger.rocketmq.remoting.codes import ResponseCode
from dledger.rocketmq.remoting.msgformat import (
    COMPRESSED_FLAG,
    TRANSACTION_PREPARED_TYPE,
    TRANSACTION_TYPE_MASK,
    Host,
    MessageExt,
    decode_properties,
)

__all__ = [
    "BORN_HOST",
    "DEFAULT_DELAY_LEVELS",
    "FLAG",
    "RECONSUME_TIMES",
    "SYSTEM_PREFIX",
    "RemotingMessageError",
    "SendFields",
    "delay_levels",
    "dlq_topic",
    "from_remoting",
    "host_of",
    "physical_offset",
    "remoting_properties",
    "retry_topic",
    "split_physical_offset",
    "to_message_ext",
]

DEFAULT_DELAY_LEVELS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
SYSTEM_PREFIX = "__dl.p."  # RocketMQ system properties the store keeps for remoting consumers
FLAG = "__dl.flag"
RECONSUME_TIMES = "__dl.reconsumeTimes"
BORN_HOST = "__dl.bornHost"  # the gRPC face's name for the producer's host
_ENCODING = "__dl.encoding"  # the gRPC face's body encoding ("gzip")
RETRY_GROUP_TOPIC_PREFIX = "%RETRY%"
DLQ_GROUP_TOPIC_PREFIX = "%DLQ%"
# MessageConst names the store maps to its own fields
TAGS, KEYS, UNIQ_KEY, DELAY, TRAN_MSG = "TAGS", "KEYS", "UNIQ_KEY", "DELAY", "TRAN_MSG"
# MessageConst's system property names (kept under SYSTEM_PREFIX, not shown to gRPC consumers)
_SYSTEM = frozenset(
    {
        "WAIT", "RETRY_TOPIC", "REAL_TOPIC", "REAL_QID", "PGROUP", "MIN_OFFSET", "MAX_OFFSET", "BUYER_ID",
        "ORIGIN_MESSAGE_ID", "TRANSFER_FLAG", "CORRECTION_FLAG", "MQ2_FLAG", "RECONSUME_TIME", "MSG_REGION",
        "TRACE_ON", "MAX_RECONSUME_TIMES", "CONSUME_START_TIME", "TRAN_PREPARED_QUEUE_OFFSET",
        "TRANSACTION_CHECK_TIMES", "CHECK_IMMUNITY_TIME_IN_SECONDS", "INSTANCE_ID", "CORRELATION_ID",
        "REPLY_TO_CLIENT", "TTL", "ARRIVE_TIME", "PUSH_REPLY_TIME", "CLUSTER", "MSG_TYPE", "__SHARDINGKEY",
        "UNIQ_KEY_BATCH", "TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS",
    }
)  # fmt: skip
_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_PHYSICAL_POS = (1 << 32) - 1
ILLEGAL = ResponseCode.MESSAGE_ILLEGAL


class RemotingMessageError(ValueError):
    """A sent message the store must not take; `code` is the remoting response code to answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def retry_topic(group: str) -> str:
    return RETRY_GROUP_TOPIC_PREFIX + group


def dlq_topic(group: str) -> str:
    return DLQ_GROUP_TOPIC_PREFIX + group


def delay_levels(spec: str = DEFAULT_DELAY_LEVELS) -> tuple[int, ...]:
    """`messageDelayLevel` ("1s 5s 1m 2h ...") as milliseconds per level (level 1 first); ValueError (one
    line) on a malformed spec."""
    out = []
    for item in spec.split():
        unit = _UNITS.get(item[-1:])
        if unit is None or not item[:-1].isdigit():
            raise ValueError(f"messageDelayLevel: {item!r} is not a number with a unit of s, m, h or d")
        out.append(int(item[:-1]) * unit)
    if not out:
        raise ValueError("messageDelayLevel is empty")
    return tuple(out)


def physical_offset(log_index: int, log_pos: int) -> int:
    return (log_index << 32) | min(log_pos, _MAX_PHYSICAL_POS)


def split_physical_offset(offset: int) -> tuple[int, int]:
    """(log index, byte position) of a physical offset."""
    return offset >> 32, offset & _MAX_PHYSICAL_POS


@functools.lru_cache(maxsize=4096)  # a send and a pulled message each need one: parsing an IP is not free
def host_of(address: str) -> Host:
    """(address bytes, port) of "ip:port", "[v6]:port" or a bare IP; 127.0.0.1:0 for anything else (a
    hostname, garbage)."""
    text = address.strip()
    host, sep, port = text.rpartition(":")
    if not sep or (":" in host and not host.startswith("[")):
        host, port = text, "0"
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (b"\x7f\0\0\x01", 0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.packed, int(port) if port.isdigit() and int(port) < 65536 else 0)


@dataclass(frozen=True, slots=True)
class SendFields:
    """What a SEND_MESSAGE request says of one message (from its header, or a batch record)."""

    topic: str
    body: bytes
    queue_id: int = -1
    sys_flag: int = 0
    flag: int = 0
    born_timestamp: int = 0
    properties: Mapping[str, str] | str = ""
    reconsume_times: int = 0
    born_host: str = ""


def _inflate(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RemotingMessageError(ILLEGAL, f"the compressed body does not inflate: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise RemotingMessageError(ILLEGAL, f"the body inflates to more than maxMessageSize ({limit} bytes)")
    return out


def from_remoting(fields: SendFields, *, now_ms: int, levels: tuple[int, ...], max_body: int) -> Message:
    """The store's `Message` for a sent remoting message (code 13 MESSAGE_ILLEGAL on a bad one)."""
    props = decode_properties(fields.properties) if isinstance(fields.properties, str) else dict(fields.properties)
    body = fields.body
    if fields.sys_flag & COMPRESSED_FLAG:
        body = _inflate(body, max_body)
    if not body:
        raise RemotingMessageError(ILLEGAL, "the message body is empty")
    if len(body) > max_body:
        raise RemotingMessageError(ILLEGAL, f"the body is {len(body)} bytes; maxMessageSize is {max_body}")
    tags = props.pop(TAGS, "")
    keys = tuple(k for k in props.pop(KEYS, "").split(" ") if k)
    msg_id = props.pop(UNIQ_KEY, "")
    delay = props.pop(DELAY, "")
    transaction = (
        props.pop(TRAN_MSG, "").lower() == "true"
        or (fields.sys_flag & TRANSACTION_TYPE_MASK) == TRANSACTION_PREPARED_TYPE
    )
    kept: dict[str, str] = {}
    for name, value in props.items():
        if name.startswith("__dl."):
            raise RemotingMessageError(ILLEGAL, f"property {name!r} is reserved for the broker")
        kept[SYSTEM_PREFIX + name if name in _SYSTEM else name] = value
    if fields.flag:
        kept[FLAG] = str(fields.flag)
    if fields.reconsume_times:
        kept[RECONSUME_TIMES] = str(fields.reconsume_times)
    if fields.born_host:
        kept[BORN_HOST] = fields.born_host
    delivery = 0
    if delay:
        if not delay.lstrip("-").isdigit():
            raise RemotingMessageError(ILLEGAL, f"delay level {delay[:20]!r} is not a number")
        level = int(delay)
        if level > 0:
            delivery = now_ms + levels[min(level, len(levels)) - 1]
    return Message(
        topic=fields.topic,
        body=body,
        queue_id=fields.queue_id,
        tags=tags,
        keys=keys,
        properties=kept,
        born_timestamp=fields.born_timestamp,
        msg_id=msg_id,
        delivery_timestamp=delivery,
        transaction=transaction,
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def remoting_properties(msg: Message) -> dict[str, str]:
    """The RocketMQ properties of a stored message: its system properties back under their own names, its
    tag, keys and message id, and its user properties (the store's reserved ones left out)."""
    props: dict[str, str] = {}
    for name, value in msg.properties.items():
        if name.startswith(SYSTEM_PREFIX):
            props[name[len(SYSTEM_PREFIX) :]] = value
        elif not name.startswith("__dl."):
            props[name] = value
    if msg.tags:
        props[TAGS] = msg.tags
    if msg.keys:
        props[KEYS] = " ".join(msg.keys)
    if msg.msg_id:
        props[UNIQ_KEY] = msg.msg_id
    return props


def _served_body(msg: Message) -> bytes:
    if msg.properties.get(_ENCODING) == "gzip":
        try:
            return zlib.decompress(msg.body, zlib.MAX_WBITS | 32)
        except zlib.error:
            return msg.body
    return msg.body


def to_message_ext(stored: StoredMessage, store_host: Host) -> MessageExt:
    """A stored message as a remoting consumer reads it (RocketMQ's `MessageExt`)."""
    msg = stored.message
    props = remoting_properties(msg)
    if stored.topic and stored.topic != msg.topic:  # dead-lettered by the broker's Pop path: keep the origin
        props.setdefault("DLQ_ORIGIN_TOPIC", msg.topic)
        props.setdefault("DLQ_ORIGIN_MESSAGE_ID", msg.msg_id)
    born = host_of(msg.properties[BORN_HOST]) if BORN_HOST in msg.properties else store_host
    if len(born[0]) != 4:  # 4.x C++ clients read only IPv4 born hosts
        born = (b"\x7f\0\0\x01", born[1])
    flag = _int(msg.properties.get(FLAG))
    return MessageExt(
        topic=stored.topic or msg.topic,
        body=_served_body(msg),
        queue_id=stored.queue_id,
        flag=flag if -(2**31) <= flag < 2**31 else 0,
        queue_offset=stored.queue_offset,
        commit_log_offset=physical_offset(stored.log_index, stored.log_pos),
        sys_flag=0,
        born_timestamp=msg.born_timestamp,
        born_host=born,
        store_timestamp=stored.store_timestamp,
        store_host=store_host,
        reconsume_times=min(max(_int(msg.properties.get(RECONSUME_TIMES)), 0), 2**31 - 1),
        prepared_transaction_offset=0,
        properties=props,
    )
