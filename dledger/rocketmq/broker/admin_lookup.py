"""Single lookups mqadmin and the Dashboard make through remoting: GET_TOPIC_CONFIG (one topic's
`TopicConfig`, RocketMQ 5's `TopicConfigAndQueueMapping` without a static-queue mapping),
GET_SUBSCRIPTIONGROUP_CONFIG (one group's `SubscriptionGroupConfig`), QUERY_TOPIC_CONSUME_BY_WHO (`GroupList`:
`{"groupList": [...]}`) and QUERY_CONSUME_TIME_SPAN (`QueryConsumeTimeSpanBody`).

All are reads of the replica's applied state (any replica answers). The groups that consume a topic are the
online consumer groups subscribed to it together with every group that has a position, a commit or counters
on it in the store. A consume time span per queue is RocketMQ's `QueueTimeSpan`: `minTimeStamp` and
`maxTimeStamp` the store times of the queue's first and last message, `consumeTimeStamp` that of the last
message the group committed past (the first message's when it has none), `delayTime` how long ago the next
message it has not consumed was stored (0 when it is caught up); times are 0 for an empty queue.

An unknown topic answers TOPIC_NOT_EXIST and a group without settings SUBSCRIPTION_GROUP_NOT_EXIST, with one
line, as RocketMQ's broker does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from dledger.rocketmq.broker.admin import topic_json
from dledger.rocketmq.broker.context import BrokerContext, name_field
from dledger.rocketmq.broker.subgroups import config_json
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = ["HANDLERS"]


async def topic_config(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = name_field(cmd, "topic", "topic")
    cfg = ctx.store.topic(topic)
    if cfg is None:
        return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"No topic in this broker. topic: {topic}")
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(topic_json(cfg)))


async def group_config(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = name_field(cmd, "group", "group")
    cfg = ctx.store.group_config(group)
    if cfg is None:
        return cmd.response_to(ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, f"No group in this broker. group: {group}")
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(config_json(cfg)))


async def consumed_by(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = name_field(cmd, "topic", "topic")
    online = {g for g in ctx.clients.groups() if ctx.clients.subscription(g, topic) is not None}
    groups = sorted(online | set(ctx.store.topic_groups(topic)))
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps({"groupList": groups}))


async def _stamp(ctx: BrokerContext, topic: str, queue: int, offset: int) -> int:
    """The store time of the message at `offset` (0 when there is none)."""
    if offset < 0:
        return 0
    found = await ctx.store.get_messages("", topic, queue, offset, 1)
    return found.messages[0].store_timestamp if found.messages and found.messages[0].queue_offset == offset else 0


async def time_span(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = name_field(cmd, "topic", "topic")
    group = name_field(cmd, "group", "group")
    cfg = ctx.store.topic(topic)
    if cfg is None:
        return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist")
    spans = []
    now = int(time.time() * 1000)
    for queue in range(cfg.queue_count):
        low, high = ctx.store.min_offset(topic, queue), ctx.store.max_offset(topic, queue)
        first = await _stamp(ctx, topic, queue, low) if high > low else 0
        consumed = ctx.store.committed_offset(group, topic, queue)
        nxt = await _stamp(ctx, topic, queue, max(consumed, low)) if 0 <= consumed < high else 0
        spans.append({
            "consumeTimeStamp": await _stamp(ctx, topic, queue, consumed - 1) if consumed > low else first,
            "delayTime": max(now - nxt, 0) if nxt else 0,
            "maxTimeStamp": await _stamp(ctx, topic, queue, high - 1) if high > low else 0,
            "messageQueue": {"brokerName": ctx.config.broker_name, "queueId": queue, "topic": topic},
            "minTimeStamp": first,
        })  # fmt: skip
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps({"consumeTimeSpanSet": spans}))


R = RequestCode
HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {
    R.GET_TOPIC_CONFIG: topic_config,
    R.GET_SUBSCRIPTIONGROUP_CONFIG: group_config,
    R.QUERY_TOPIC_CONSUME_BY_WHO: consumed_by,
    R.QUERY_CONSUME_TIME_SPAN: time_span,
}
