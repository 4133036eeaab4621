"""The offset calls (QueryOffset, GetOffset, UpdateOffset), PullMessage and ForwardMessageToDeadLetterQueue.

QueryOffset / GetOffset / PullMessage are reads from this replica's applied state (PullMessage takes tag and
SQL92 filters: the messages a filter does not take are left out, next_offset still passes them); UpdateOffset and the
dead-letter forward are writes (master, or forwarded to the leader). Forwarding to the dead-letter queue is
three store writes: a change of its invisible time (which checks that the handle is current), a put of the
message to `%DLQ%<group>`, then an ack: if the ack fails after the put, the message may reach the
dead-letter queue twice (at least once, never lost); a stale handle puts nothing.
"""

from __future__ import annotations

from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]
from rocketmq.grpc_protocol import service_pb2 as s

from dledger.broker_adapter.pop import parse_handle
from dledger.broker_adapter.reader import parse_tag_filter
from dledger.broker_adapter.results import NAME, AckStatus, GetStatus, PutStatus, StoreError
from dledger.broker_adapter.sql92 import SqlError
from dledger.broker_adapter.sql92 import parse as parse_sql
from dledger.rocketmq.v5.codes import Code, ack_code, put_code
from dledger.rocketmq.v5.context import NotMaster, ServiceContext, status
from dledger.rocketmq.v5.convert import (
    DLQ_ORIGIN_MESSAGE_ID,
    DLQ_ORIGIN_TOPIC,
    sql_properties,
    store_name,
    store_name_part,
    to_proto,
)
from dledger.rocketmq.v5.topics import readable

__all__ = ["forward_to_dlq", "get_offset", "pull_message", "query_offset", "update_offset"]


def _queue(ep: ServiceContext, mq: Any) -> tuple[str, int] | Any:
    """(store topic, queue id), or an error Status."""
    topic = store_name(mq.topic)
    if not mq.topic.name or not NAME.match(topic):
        return status(Code.ILLEGAL_TOPIC, f"illegal topic {mq.topic.name!r}")
    cfg = ep.store.topic(topic)
    if cfg is None:
        return status(Code.TOPIC_NOT_FOUND, f"topic {mq.topic.name!r}")
    if not 0 <= mq.id < cfg.queue_count:
        return status(Code.BAD_REQUEST, f"queue {mq.id} does not exist (the topic has {cfg.queue_count})")
    return topic, int(mq.id)


async def query_offset(ep: ServiceContext, request: Any, context: Any) -> Any:
    if (denied := ep.denied(context)) is not None:
        return s.QueryOffsetResponse(status=denied)
    q = _queue(ep, request.message_queue)
    if not isinstance(q, tuple):
        return s.QueryOffsetResponse(status=q)
    topic, queue = q
    policy = request.query_offset_policy
    if policy == d.QueryOffsetPolicy.BEGINNING:
        offset = ep.store.min_offset(topic, queue)
    elif policy == d.QueryOffsetPolicy.END:
        offset = ep.store.max_offset(topic, queue)
    else:
        if not request.HasField("timestamp"):
            return s.QueryOffsetResponse(status=status(Code.BAD_REQUEST, "policy TIMESTAMP needs a timestamp"))
        ms = request.timestamp.seconds * 1000 + request.timestamp.nanos // 1_000_000
        offset = ep.store.offset_for_timestamp(topic, queue, ms)
    return s.QueryOffsetResponse(status=status(Code.OK), offset=offset)


async def get_offset(ep: ServiceContext, request: Any, context: Any) -> Any:
    if (denied := ep.denied(context)) is not None:
        return s.GetOffsetResponse(status=denied)
    group = store_name(request.group)
    if not request.group.name or not NAME.match(group):
        return s.GetOffsetResponse(status=status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
    q = _queue(ep, request.message_queue)
    if not isinstance(q, tuple):
        return s.GetOffsetResponse(status=q)
    offset = ep.store.committed_offset(group, *q)
    if offset < 0:
        return s.GetOffsetResponse(status=status(Code.OFFSET_NOT_FOUND, "the group has no offset here"))
    return s.GetOffsetResponse(status=status(Code.OK), offset=offset)


async def update_offset(ep: ServiceContext, request: Any, context: Any) -> Any:
    if (denied := ep.denied(context)) is not None:
        return s.UpdateOffsetResponse(status=denied)
    group = store_name(request.group)
    if not request.group.name or not NAME.match(group):
        return s.UpdateOffsetResponse(status=status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
    q = _queue(ep, request.message_queue)
    if not isinstance(q, tuple):
        return s.UpdateOffsetResponse(status=q)
    if request.offset < 0:
        return s.UpdateOffsetResponse(status=status(Code.ILLEGAL_OFFSET, f"offset {request.offset}"))

    async def local() -> Any:
        try:
            await ep.store.commit_offset(group, q[0], q[1], request.offset)
        except StoreError as exc:
            if exc.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                raise NotMaster(exc.reason) from None
            return s.UpdateOffsetResponse(status=status(put_code(exc.status), exc.reason))
        return s.UpdateOffsetResponse(status=status(Code.OK))

    def fail(code: int, why: str) -> Any:
        return s.UpdateOffsetResponse(status=status(code, why))

    return await ep.write(context, local, lambda st, md, t: st.UpdateOffset(request, metadata=md, timeout=t), fail)


async def pull_message(ep: ServiceContext, request: Any, context: Any) -> list[Any]:
    if (denied := ep.denied(context)) is not None:
        return [s.PullMessageResponse(status=denied)]
    group = store_name(request.group)
    if not request.group.name or not NAME.match(group):
        return [s.PullMessageResponse(status=status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))]
    q = _queue(ep, request.message_queue)
    if not isinstance(q, tuple):
        return [s.PullMessageResponse(status=q)]
    if request.offset < 0 or not 0 < request.batch_size <= 1024:
        return [s.PullMessageResponse(status=status(Code.BAD_REQUEST, "offset >= 0 and batch_size in 1..1024"))]
    if not readable(ep.store.topic(q[0])):
        return [s.PullMessageResponse(status=status(Code.FORBIDDEN, f"topic {q[0]!r} is not readable"))]
    fx = request.filter_expression
    sql = None
    if fx.type == d.FilterType.SQL:
        try:
            sql = parse_sql(fx.expression)
        except SqlError as exc:
            why = f"bad SQL92 expression {fx.expression[:200]!r}: {exc}"
            return [s.PullMessageResponse(status=status(Code.ILLEGAL_FILTER_EXPRESSION, why))]
    tags = None if sql is not None else parse_tag_filter(fx.expression or None)
    result = await ep.store.get_messages(group, q[0], q[1], request.offset, request.batch_size, tag_filter=tags)
    messages = [m for m in result.messages if sql is None or sql.matches(sql_properties(m.message))]
    if result.status in (GetStatus.OFFSET_OVERFLOW_BADLY, GetStatus.OFFSET_TOO_SMALL):
        out = [s.PullMessageResponse(status=status(Code.ILLEGAL_OFFSET, result.status.value))]
    elif messages:
        out = [s.PullMessageResponse(status=status(Code.OK))]
        out += [s.PullMessageResponse(message=to_proto(m, ep.config.address)) for m in messages]
    else:
        out = [s.PullMessageResponse(status=status(Code.MESSAGE_NOT_FOUND, result.status.value))]
    out.append(s.PullMessageResponse(next_offset=result.next_offset))
    return out


async def forward_to_dlq(ep: ServiceContext, request: Any, context: Any) -> Any:
    Resp = s.ForwardMessageToDeadLetterQueueResponse
    if (denied := ep.denied(context)) is not None:
        return Resp(status=denied)
    group = store_name(request.group)
    if not request.group.name or not NAME.match(group):
        return Resp(status=status(Code.ILLEGAL_CONSUMER_GROUP, "illegal consumer group"))
    parsed = parse_handle(request.receipt_handle)
    if parsed is None:
        return Resp(status=status(Code.INVALID_RECEIPT_HANDLE, "malformed receipt handle"))
    topic, queue, offset, _ = parsed

    async def local() -> Any:
        # first make sure the handle is current (and keep the message invisible meanwhile): a stale handle
        # must not put a second copy into the dead-letter queue
        held = await ep.store.change_invisible_duration(group, request.receipt_handle, 60_000)
        if held.status in (AckStatus.NOT_LEADER, AckStatus.SERVICE_NOT_AVAILABLE):
            raise NotMaster(held.reason)
        if held.status is not AckStatus.OK:
            return Resp(status=status(ack_code(held.status), "the receipt handle is not current"))
        got = await ep.store.get_messages(group, topic, queue, offset, 1)
        if not got.messages or got.messages[0].queue_offset != offset:
            return Resp(status=status(Code.INVALID_RECEIPT_HANDLE, "the message is gone"))
        dlq = f"%DLQ%{group}"
        try:
            if ep.store.topic(dlq) is None:
                await ep.store.create_topic(dlq, 1)
        except StoreError as exc:
            if exc.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
                raise NotMaster(exc.reason) from None
            return Resp(status=status(put_code(exc.status), exc.reason))
        msg = got.messages[0].message
        origin = {DLQ_ORIGIN_TOPIC: store_name_part(msg.topic), DLQ_ORIGIN_MESSAGE_ID: msg.msg_id}
        dead = msg.replace(
            topic=dlq, queue_id=0, message_group="", delivery_timestamp=0, properties={**msg.properties, **origin}
        )
        put = await ep.store.put_message(dead)
        if put.status in (PutStatus.NOT_LEADER, PutStatus.SERVICE_NOT_AVAILABLE):
            raise NotMaster(put.reason)
        if not put.ok:
            return Resp(status=status(put_code(put.status, put.reason), put.reason))
        acked = await ep.store.ack_message(group, held.receipt_handle)
        if acked.status in (AckStatus.NOT_LEADER, AckStatus.SERVICE_NOT_AVAILABLE):
            raise NotMaster(acked.reason)
        return Resp(status=status(ack_code(acked.status)))

    def fail(code: int, why: str) -> Any:
        return Resp(status=status(code, why))

    return await ep.write(
        context, local, lambda st, md, t: st.ForwardMessageToDeadLetterQueue(request, metadata=md, timeout=t), fail
    )
