"""Conversions between RocketMQ 5 protobuf messages and the store's `Message` model.

Invariants: a message sent by a client and received by a consumer has the same topic (without namespace),
body bytes, tag, keys, user properties, message id, message group, delivery time and born host/time; the
wire-only system fields the store has no column for (born host, body encoding) travel as reserved
properties with the `__dl.` prefix, which are never shown to consumers. The body digest a consumer receives is
the MD5 of the body bytes as stored (compressed, if the producer compressed them) in uppercase hex, as
RocketMQ's proxy sends it. Namespaces map to RocketMQ's
`namespace%name` store names. Timestamps are epoch milliseconds in the store.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]

from dledger.broker_adapter.message import Message
from dledger.broker_adapter.results import ReceivedMessage, StoredMessage

__all__ = ["ConvertError", "from_proto", "message_type", "store_name", "to_proto"]

_BORN_HOST = "__dl.bornHost"
_ENCODING = "__dl.encoding"
RESERVED = "__dl."
MAX_DELAY_MS = 3 * 24 * 3600 * 1000  # RocketMQ's timerMaxDelaySec


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


def from_proto(pm: Any, *, max_body: int, now_ms: int) -> Message:
    """A store `Message` from a `SendMessageRequest` message; raises `ConvertError` on a bad message."""
    sp = pm.system_properties
    topic = store_name(pm.topic)
    if not pm.topic.name:
        raise ConvertError(d.Code.ILLEGAL_TOPIC, "the topic is empty")
    if not pm.body:
        raise ConvertError(d.Code.MESSAGE_BODY_EMPTY, "the message body is empty")
    if len(pm.body) > max_body:
        raise ConvertError(d.Code.MESSAGE_BODY_TOO_LARGE, f"the body is {len(pm.body)} bytes; the limit is {max_body}")
    if not sp.message_id:
        raise ConvertError(d.Code.ILLEGAL_MESSAGE_ID, "the message has no message_id")
    props = dict(pm.user_properties)
    if any(k.startswith(RESERVED) for k in props):
        raise ConvertError(
            d.Code.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property keys starting with {RESERVED!r} are reserved"
        )
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


def to_proto(
    stored: StoredMessage, store_host: str, received: ReceivedMessage | None = None, invisible_ms: int = 0
) -> Any:
    """The protobuf `Message` a consumer receives (with its receipt handle when popped)."""
    msg = stored.message
    pm = d.Message()
    ns, name = _split_name(msg.topic)
    pm.topic.name = name
    pm.topic.resource_namespace = ns
    pm.body = msg.body
    sp = pm.system_properties
    for key, value in msg.properties.items():
        if not key.startswith(RESERVED):
            pm.user_properties[key] = value
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
