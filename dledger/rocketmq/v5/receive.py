"""ReceiveMessage: Pop consumption with invisible duration, long polling and tag filtering.

The receive is a write (a pop is a replicated command), so it runs on the master or is forwarded to the
leader like every write (`ServiceContext._write`). Long polling: while the master finds nothing to
deliver, it waits for the next applied batch (`ApplyNotifier`) or at most 0.5 s (so that expired
invisibility is noticed), until the client's long polling timeout, always answering before its deadline.
A group new to a topic starts after the messages stored before its first receive (RocketMQ 5's proxy starts
a new group at the end of each queue), or at the beginning with `consumeFromWhere=CONSUME_FROM_FIRST_OFFSET`.
Filters (tags, or SQL92 expressions, `sql92.py`): the store pops without a filter; messages the subscription
does not take are acknowledged for this group at once and never delivered to it (what a broker-side filter
means for Pop). A SQL92 expression sees the message's user properties plus `TAGS` and `KEYS`.
The answer is a status, the messages, then the delivery timestamp (which the clients' metrics read).
"""

from __future__ import annotations

import time
from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]
from rocketmq.grpc_protocol import service_pb2 as s

from dledger.broker_adapter.message import Message
from dledger.broker_adapter.reader import parse_tag_filter
from dledger.broker_adapter.results import NAME, PopStatus
from dledger.broker_adapter.sql92 import Filter, SqlError
from dledger.broker_adapter.sql92 import parse as parse_sql
from dledger.rocketmq.v5.codes import Code, pop_code
from dledger.rocketmq.v5.context import MAX_INVISIBLE_MS, NotMaster, ServiceContext, ms, now_ts, status
from dledger.rocketmq.v5.convert import sql_properties, store_name, to_proto

MAX_POLL_S = 60.0

__all__ = ["receive"]


def _takes(msg: Message, tags: frozenset[str] | None, sql: Filter | None) -> bool:
    if sql is not None:
        return sql.matches(sql_properties(msg))
    return tags is None or msg.tags in tags


async def receive(ep: ServiceContext, request: Any, context: Any) -> list[Any]:
    def fail(code: int, why: str) -> list[Any]:
        return [s.ReceiveMessageResponse(status=status(code, why))]

    if (denied := ep.denied(context)) is not None:
        return [s.ReceiveMessageResponse(status=denied)]
    group, topic = store_name(request.group), store_name(request.message_queue.topic)
    if not request.group.name or not NAME.match(group):
        return fail(Code.ILLEGAL_CONSUMER_GROUP, f"illegal consumer group {request.group.name!r}")
    if not request.message_queue.topic.name or not NAME.match(topic):
        return fail(Code.ILLEGAL_TOPIC, f"illegal topic {request.message_queue.topic.name!r}")
    if request.batch_size <= 0 or request.batch_size > 1024:
        return fail(Code.BAD_REQUEST, f"batch_size {request.batch_size} is not in 1..1024")
    if request.HasField("invisible_duration"):
        invisible = ms(request.invisible_duration)
    elif request.auto_renew:
        invisible = ep.config.default_invisible_ms
    else:
        invisible = 0
    if not 0 < invisible <= MAX_INVISIBLE_MS:
        return fail(Code.ILLEGAL_INVISIBLE_TIME, f"invisible duration {invisible} ms is not in (0, 12 h]")
    poll = ms(request.long_polling_timeout) / 1000 if request.HasField("long_polling_timeout") else 0.0
    if not 0 <= poll <= MAX_POLL_S:
        return fail(Code.ILLEGAL_POLLING_TIME, f"long polling {poll} s is not in [0, {MAX_POLL_S}]")
    fx = request.filter_expression
    tags: frozenset[str] | None = None
    sql: Filter | None = None
    if fx.type == d.FilterType.SQL:
        try:
            sql = parse_sql(fx.expression)
        except SqlError as exc:
            return fail(Code.ILLEGAL_FILTER_EXPRESSION, f"bad SQL92 expression {fx.expression[:200]!r}: {exc}")
    else:
        try:
            tags = parse_tag_filter(fx.expression or None)
        except ValueError:
            return fail(Code.ILLEGAL_FILTER_EXPRESSION, f"bad tag expression {fx.expression!r}")
    until = min(ep.deadline(context) - 0.3, time.monotonic() + poll)

    async def local() -> list[Any]:
        while True:
            result = await ep.store.pop_messages(
                group, topic, request.batch_size, invisible, from_end=ep.store.options.consume_from_last
            )
            if result.status in (PopStatus.NOT_LEADER, PopStatus.SERVICE_NOT_AVAILABLE):
                raise NotMaster(result.reason)
            if result.status is PopStatus.TOPIC_NOT_FOUND and ep.store.options.auto_create_topic:
                pass  # not written yet: long-poll like an empty topic
            elif result.status not in (PopStatus.FOUND, PopStatus.NO_NEW_MSG):
                return fail(pop_code(result.status), result.reason)
            wanted = [m for m in result.messages if _takes(m.stored.message, tags, sql)]
            skipped = [m.receipt_handle for m in result.messages if not _takes(m.stored.message, tags, sql)]
            if skipped:  # not for this subscription: consumed for this group (like a broker-side filter)
                await ep.store.ack_messages(group, skipped)
            if wanted:
                out = [s.ReceiveMessageResponse(status=status(Code.OK))]
                for m in wanted:
                    pm = to_proto(m.stored, ep.config.address, m, invisible)
                    out.append(s.ReceiveMessageResponse(message=pm))
                out.append(s.ReceiveMessageResponse(delivery_timestamp=now_ts()))
                return out
            left = until - time.monotonic()
            if left <= 0:
                return fail(Code.MESSAGE_NOT_FOUND, "no new message")
            await ep.notifier.wait(min(left, 0.5))

    async def forward(stub: Any, md: list[tuple[str, str]], timeout: float) -> list[Any]:
        return [r async for r in stub.ReceiveMessage(request, metadata=md, timeout=timeout)]

    return await ep.write(context, local, forward, fail)
