"""The endpoint's view of topic settings and recall: message type checks, routes, RecallMessage.

- A send whose message type the topic does not take is refused as RocketMQ 5's proxy refuses it:
  MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "TopicMessageType validate failed, the expected type is X, but actual
  type is Y". A MIXED topic (every auto-created one) takes every type.
- A route lists the topic's permission (read, write, both, none) and the types it accepts; a topic without the
  read permission refuses PullMessage with FORBIDDEN (receives are refused by the store).
- The send receipt of a delayed message carries a recall handle (`admin_model.format_recall_handle`);
  RecallMessage with it withdraws the message while it waits (a replicated command, so it runs on the master
  or is forwarded like every write); a message delivered or recalled already answers NOT_FOUND, a handle that is
  not ours BAD_REQUEST.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]
from rocketmq.grpc_protocol import service_pb2 as s

from dledger.broker_adapter.admin_model import PERM_READ, PERM_WRITE, format_recall_handle
from dledger.broker_adapter.message import Message, MessageType
from dledger.broker_adapter.results import PutStatus, StoreError, TopicConfig
from dledger.broker_adapter.store import MessageStore
from dledger.rocketmq.v5.codes import Code, put_code
from dledger.rocketmq.v5.context import NotMaster, ServiceContext, status
from dledger.rocketmq.v5.convert import store_name

__all__ = ["ACCEPTS", "permission", "permission_of", "readable", "recall_handle", "recall_message", "type_conflict"]

ACCEPTS = {
    MessageType.NORMAL: [d.MessageType.NORMAL],
    MessageType.FIFO: [d.MessageType.FIFO],
    MessageType.DELAY: [d.MessageType.DELAY],
    MessageType.TRANSACTION: [d.MessageType.TRANSACTION],
    MessageType.MIXED: [d.MessageType.NORMAL, d.MessageType.FIFO, d.MessageType.DELAY, d.MessageType.TRANSACTION],
}
_PERMISSIONS = {
    PERM_READ | PERM_WRITE: d.Permission.READ_WRITE,
    PERM_READ: d.Permission.READ,
    PERM_WRITE: d.Permission.WRITE,
    0: d.Permission.NONE,
}


def message_type(msg: Message) -> MessageType:
    if msg.transaction:
        return MessageType.TRANSACTION
    if msg.message_group:
        return MessageType.FIFO
    return MessageType.DELAY if msg.delivery_timestamp else MessageType.NORMAL


def type_conflict(store: MessageStore, batch: Sequence[Message]) -> str | None:
    """Why a message of the batch does not fit its topic's type (None: all fit, or the topic is new)."""
    for msg in batch:
        cfg = store.topic(msg.topic)
        kind = message_type(msg)
        if cfg is not None and cfg.message_type not in (kind, MessageType.MIXED):
            return (
                f"TopicMessageType validate failed, the expected type is {cfg.message_type.name}, "
                f"but actual type is {kind.name}"
            )
    return None


def permission_of(perm: int) -> int:
    """The route's permission for RocketMQ's permission bits (read 4, write 2)."""
    return int(_PERMISSIONS.get(perm & (PERM_READ | PERM_WRITE), d.Permission.READ_WRITE))


def permission(cfg: TopicConfig | None) -> int:
    return permission_of(cfg.perm) if cfg is not None else int(d.Permission.READ_WRITE)


def readable(cfg: TopicConfig | None) -> bool:
    """May the topic be read (received, pulled)? A topic that does not exist yet may."""
    return cfg is None or bool(cfg.perm & PERM_READ)


def recall_handle(msg: Message, msg_id: str, now_ms: int) -> str:
    """The receipt's recall handle: set for a message delayed past `now_ms`, else empty."""
    if msg.delivery_timestamp > now_ms and not msg.transaction:
        return format_recall_handle(msg.topic, msg_id, msg.delivery_timestamp)
    return ""


async def recall_message(ctx: ServiceContext, request: Any, context: Any) -> Any:
    if (denied := ctx.denied(context)) is not None:
        return s.RecallMessageResponse(status=denied)
    topic = store_name(request.topic)
    if not request.topic.name or not request.recall_handle:
        return s.RecallMessageResponse(status=status(Code.BAD_REQUEST, "a topic and a recall handle are required"))

    async def local() -> Any:
        try:
            msg_id = await ctx.store.recall(topic, request.recall_handle)
        except StoreError as exc:
            if exc.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                raise NotMaster(exc.reason) from None
            return s.RecallMessageResponse(status=status(put_code(exc.status, exc.reason), exc.reason))
        return s.RecallMessageResponse(status=status(Code.OK), message_id=msg_id)

    def fail(code: int, why: str) -> Any:
        return s.RecallMessageResponse(status=status(code, why))

    return await ctx.write(context, local, lambda st, md, t: st.RecallMessage(request, metadata=md, timeout=t), fail)
