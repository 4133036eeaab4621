"""Conversions between RocketMQ 5 protobuf messages and the store's `Message` model.

Invariants: a message sent by a client and received by a consumer has the same topic (without namespace),
body bytes, tag, keys, user properties, message id, message group, delivery time and born host/time; the
wire-only system fields the store has no column for (born host, body encoding) travel as reserved
properties with the `__dl.` prefix, which are never shown to consumers. Namespaces map to RocketMQ's
`namespace%name` store names. Timestamps are epoch milliseconds in the store. The body digest a consumer
receives is the MD5 of the body bytes as stored (compressed, if the producer compressed them) in uppercase
hex, as RocketMQ's proxy sends it.

A sent message is checked with the limits and status codes of RocketMQ's proxy: maxMessageSize applies to the
body alone; user properties are at most `MAX_PROPERTIES` entries and `MAX_PROPERTY_BYTES` bytes together with
the tag and keys (MESSAGE_PROPERTIES_TOO_LARGE); a topic name is 1-127 of `[%|a-zA-Z0-9_-]` (ILLEGAL_TOPIC), a
message group under `MAX_MESSAGE_GROUP_BYTES` bytes; keys, tags, groups and properties may not be blank or hold
control characters. A message read from a dead-letter queue reports that queue's topic `%DLQ%<group>`, and
its original topic and message id both in `dead_letter_queue` and in the properties `DLQ_ORIGIN_TOPIC` and
`DLQ_ORIGIN_MESSAGE_ID` (RocketMQ's names), which a producer may not set itself; this holds for a message the
broker dead-lettered (a consume queue record pointing at the original) and for a copy a client forwarded.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]

from dledger.broker_adapter.message import Message
from dledger.broker_adapter.results import ReceivedMessage, StoredMessage

__all__ = [
    "DLQ_ORIGIN_MESSAGE_ID",
    "DLQ_ORIGIN_TOPIC",
    "MAX_PROPERTIES",
    "MAX_PROPERTY_BYTES",
    "ConvertError",
    "from_proto",
    "message_type",
    "sql_properties",
    "store_name",
    "store_name_part",
    "to_proto",
]

_BORN_HOST = "__dl.bornHost"
_ENCODING = "__dl.encoding"
RESERVED = "__dl."
MAX_DELAY_MS = 3 * 24 * 3600 * 1000  # RocketMQ's timerMaxDelaySec
MAX_PROPERTIES = 128  # RocketMQ proxy's userPropertyMaxNum
MAX_PROPERTY_BYTES = 16 * 1024  # RocketMQ proxy's maxUserPropertySize: keys and values, tag and message keys
MAX_MESSAGE_GROUP_BYTES = 64  # RocketMQ proxy's maxMessageGroupSize (a group must be shorter)
MAX_TOPIC_CHARS = 127  # RocketMQ's TopicValidator.TOPIC_MAX_LENGTH
DLQ_ORIGIN_TOPIC = "DLQ_ORIGIN_TOPIC"
DLQ_ORIGIN_MESSAGE_ID = "DLQ_ORIGIN_MESSAGE_ID"
SYSTEM_KEYS = frozenset({DLQ_ORIGIN_TOPIC, DLQ_ORIGIN_MESSAGE_ID})
_TOPIC_CHARS = re.compile(r"^[%|a-zA-Z0-9_-]+$")


class ConvertError(ValueError):
    """A request message the store cannot represent; `code` is the RocketMQ status to answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def store_name(resource: Any) -> str:
    """The store's name of a `Resource`: `namespace%name`, or just `name` without a namespace."""
    ns = resource.resource_namespace
    return f"{ns}%{resource.name}" if ns else str(resource.name)


def _ms(ts: Any) -> int:
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def _set_ms(ts: Any, ms: int) -> None:
    ts.seconds, ts.nanos = divmod(ms, 1000)[0], (ms % 1000) * 1_000_000


def _control(text: str) -> bool:
    """Does `text` hold a control character (Java's `Character.isISOControl`, which RocketMQ checks)?"""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _check_fields(pm: Any) -> None:
    """RocketMQ proxy's checks of the topic, tag, keys, message group and user properties."""
    sp = pm.system_properties
    name = pm.topic.name
    if not name:
        raise ConvertError(d.Code.ILLEGAL_TOPIC, "the topic is empty")
    if len(name) > MAX_TOPIC_CHARS or not _TOPIC_CHARS.match(name):
        raise ConvertError(d.Code.ILLEGAL_TOPIC, f"topic {name[:140]!r} must be 1-127 of [%|a-zA-Z0-9_-]")
    props = pm.user_properties
    if len(props) > MAX_PROPERTIES:
        raise ConvertError(
            d.Code.MESSAGE_PROPERTIES_TOO_LARGE, f"{len(props)} user properties; the limit is {MAX_PROPERTIES}"
        )
    size = 0
    for key, value in props.items():
        if key.startswith(RESERVED) or key in SYSTEM_KEYS:
            raise ConvertError(d.Code.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property {key!r} is reserved for the broker")
        if not key.strip() or _control(key) or _control(value):
            raise ConvertError(
                d.Code.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property {key[:64]!r} is blank or has a control character"
            )
        size += _utf8(key) + _utf8(value)
    tag = sp.tag if sp.HasField("tag") else ""
    if tag and (not tag.strip() or "|" in tag or _control(tag)):
        raise ConvertError(d.Code.ILLEGAL_MESSAGE_TAG, f"tag {tag[:64]!r} is blank or has '|' or a control character")
    size += _utf8(tag)
    for key in sp.keys:
        if not key.strip() or _control(key):
            raise ConvertError(d.Code.ILLEGAL_MESSAGE_KEY, f"key {key[:64]!r} is blank or has a control character")
        size += _utf8(key)
    if size > MAX_PROPERTY_BYTES:
        raise ConvertError(
            d.Code.MESSAGE_PROPERTIES_TOO_LARGE,
            f"user properties, tag and keys are {size} bytes; the limit is {MAX_PROPERTY_BYTES}",
        )
    group = sp.message_group if sp.HasField("message_group") else ""
    if group and (not group.strip() or _utf8(group) >= MAX_MESSAGE_GROUP_BYTES or _control(group)):
        raise ConvertError(
            d.Code.ILLEGAL_MESSAGE_GROUP,
            f"message group {group[:80]!r} is blank, {MAX_MESSAGE_GROUP_BYTES} bytes or more, or has a control "
            "character",
        )


def from_proto(pm: Any, *, max_body: int, now_ms: int) -> Message:
    """A store `Message` from a `SendMessageRequest` message; raises `ConvertError` on a bad message."""
    sp = pm.system_properties
    topic = store_name(pm.topic)
    _check_fields(pm)
    if not pm.body:
        raise ConvertError(d.Code.MESSAGE_BODY_EMPTY, "the message body is empty")
    if len(pm.body) > max_body:
        raise ConvertError(
            d.Code.MESSAGE_BODY_TOO_LARGE, f"the body is {len(pm.body)} bytes; maxMessageSize is {max_body}"
        )
    if not sp.message_id:
        raise ConvertError(d.Code.ILLEGAL_MESSAGE_ID, "the message has no message_id")
    props = dict(pm.user_properties)
    if sp.born_host:
        props[_BORN_HOST] = sp.born_host
    if sp.body_encoding == d.Encoding.GZIP:
        props[_ENCODING] = "gzip"
    mtype = sp.message_type
    group = sp.message_group if sp.HasField("message_group") else ""
    delivery = _ms(sp.delivery_timestamp) if sp.HasField("delivery_timestamp") else 0
    if mtype == d.MessageType.FIFO and not group:
        raise ConvertError(d.Code.ILLEGAL_MESSAGE_GROUP, "a FIFO message needs a message group")
    if mtype == d.MessageType.DELAY and delivery <= 0:
        raise ConvertError(d.Code.ILLEGAL_DELIVERY_TIME, "a DELAY message needs a delivery timestamp")
    if delivery > now_ms + MAX_DELAY_MS:
        raise ConvertError(d.Code.ILLEGAL_DELIVERY_TIME, "the delivery timestamp is more than 3 days ahead")
    if mtype == d.MessageType.TRANSACTION and (group or delivery):
        raise ConvertError(
            d.Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "a transactional message cannot have a group or a delivery time"
        )
    if mtype not in (d.MessageType.NORMAL, d.MessageType.FIFO, d.MessageType.DELAY, d.MessageType.TRANSACTION):
        raise ConvertError(d.Code.UNSUPPORTED, f"message type {d.MessageType.Name(mtype)} is not supported")
    return Message(
        topic=topic,
        body=bytes(pm.body),
        tags=sp.tag if sp.HasField("tag") else "",
        keys=tuple(sp.keys),
        properties=props,
        born_timestamp=_ms(sp.born_timestamp),
        msg_id=sp.message_id,
        message_group=group if mtype == d.MessageType.FIFO else "",
        delivery_timestamp=delivery if mtype == d.MessageType.DELAY else 0,
        transaction=mtype == d.MessageType.TRANSACTION,
    )


def sql_properties(msg: Message) -> dict[str, str]:
    """What a SQL92 filter sees of a message: its user properties, and `TAGS` and `KEYS` (space-separated)
    as RocketMQ keeps them among a message's properties."""
    props = {k: v for k, v in msg.properties.items() if not k.startswith(RESERVED)}
    if msg.tags:
        props["TAGS"] = msg.tags
    if msg.keys:
        props["KEYS"] = " ".join(msg.keys)
    return props


def message_type(msg: Message) -> int:
    if msg.transaction:
        return int(d.MessageType.TRANSACTION)
    if msg.message_group:
        return int(d.MessageType.FIFO)
    if msg.delivery_timestamp:
        return int(d.MessageType.DELAY)
    return int(d.MessageType.NORMAL)


def _split_name(name: str) -> tuple[str, str]:
    ns, sep, rest = name.partition("%")
    return (ns, rest) if sep and ns and not name.startswith("%") else ("", name)


def store_name_part(name: str) -> str:
    """A store name without its namespace (what a client calls the resource)."""
    return _split_name(name)[1]


def to_proto(
    stored: StoredMessage, store_host: str, received: ReceivedMessage | None = None, invisible_ms: int = 0
) -> Any:
    """The protobuf `Message` a consumer receives (with its receipt handle when popped)."""
    msg = stored.message
    pm = d.Message()
    ns, name = _split_name(stored.topic or msg.topic)
    pm.topic.name = name
    pm.topic.resource_namespace = ns
    pm.body = msg.body
    sp = pm.system_properties
    for key, value in msg.properties.items():
        if not key.startswith(RESERVED):
            pm.user_properties[key] = value
    if stored.topic and stored.topic != msg.topic:  # dead-lettered by the broker: the record points at the original
        pm.user_properties[DLQ_ORIGIN_TOPIC] = store_name_part(msg.topic)
        pm.user_properties[DLQ_ORIGIN_MESSAGE_ID] = msg.msg_id
    if DLQ_ORIGIN_TOPIC in pm.user_properties:  # (a copy forwarded by a client carries them as properties)
        sp.dead_letter_queue.topic = pm.user_properties[DLQ_ORIGIN_TOPIC]
        sp.dead_letter_queue.message_id = pm.user_properties.get(DLQ_ORIGIN_MESSAGE_ID, "")
    if msg.tags:
        sp.tag = msg.tags
    sp.keys.extend(msg.keys)
    sp.message_id = msg.msg_id
    sp.body_digest.type = d.DigestType.MD5  # as RocketMQ's proxy: every official client verifies it alike
    sp.body_digest.checksum = hashlib.md5(msg.body, usedforsecurity=False).hexdigest().upper()
    gz = msg.properties.get(_ENCODING) == "gzip"
    sp.body_encoding = d.Encoding.GZIP if gz else d.Encoding.IDENTITY
    sp.message_type = message_type(msg)
    _set_ms(sp.born_timestamp, msg.born_timestamp)
    sp.born_host = msg.properties.get(_BORN_HOST, "")
    _set_ms(sp.store_timestamp, stored.store_timestamp)
    sp.store_host = store_host
    if msg.delivery_timestamp:
        _set_ms(sp.delivery_timestamp, msg.delivery_timestamp)
    if msg.message_group:
        sp.message_group = msg.message_group
    sp.queue_id = stored.queue_id
    sp.queue_offset = stored.queue_offset
    if received is not None:
        sp.receipt_handle = received.receipt_handle
        sp.delivery_attempt = received.delivery_attempt
        sp.invisible_duration.seconds, rem = divmod(invisible_ms, 1000)
        sp.invisible_duration.nanos = rem * 1_000_000
    return pm
