"""Topic deletion and offset statistics through remoting, as mqadmin and the Dashboard ask RocketMQ's broker:
DELETE_TOPIC_IN_BROKER, GET_TOPIC_STATS_INFO (`TopicStatsTable`) and GET_CONSUME_STATS (`ConsumeStats`).

The state is the store's, the same `dledger admin topic delete` and `dledger admin progress` show: deleting a
topic is a replicated command on the master (a follower relays it, see `forward.py`) that also removes every
group's position on it. Bodies are fastjson's, maps keyed by MessageQueue objects
(`{"brokerName","queueId","topic"}`):

- TopicStatsTable: `offsetTable` MessageQueue -> `{"lastUpdateTimestamp","maxOffset","minOffset"}` for each
  queue, the timestamp being the store time of the queue's last message (0 for an empty queue);
- ConsumeStats: `offsetTable` MessageQueue -> `{"brokerOffset","consumerOffset","lastTimestamp"}` for each
  queue of the topic asked (every topic the group has a position on when the header has none), offsets
  below 0 shown as 0 as RocketMQ does, `lastTimestamp` the store time of the last message consumed;
  `consumeTps` is 0 (this broker keeps no per-group rate).

An unknown topic answers TOPIC_NOT_EXIST; a group with no position on the topic asked gets each of its queues
with consumerOffset 0; with no topic given and no position anywhere, SYSTEM_ERROR naming the group (RocketMQ
answers an empty consume stats so).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dledger.broker_adapter import PutStatus, StoreError
from dledger.rocketmq.broker.context import BrokerContext, field_text
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = ["HANDLERS", "message_queue", "store_refusal"]


def message_queue(broker_name: str, topic: str, queue: int) -> fastjson.ObjectKey:
    """A MessageQueue as fastjson writes it (fields in name order)."""
    return fastjson.ObjectKey((("brokerName", broker_name), ("queueId", queue), ("topic", topic)))


def store_refusal(cmd: RemotingCommand, exc: StoreError) -> RemotingCommand:
    """The response RocketMQ gives for what the store refused: one line."""
    code = {
        PutStatus.NOT_LEADER: ResponseCode.SERVICE_NOT_AVAILABLE,
        PutStatus.SERVICE_NOT_AVAILABLE: ResponseCode.SERVICE_NOT_AVAILABLE,
        PutStatus.TOPIC_NOT_FOUND: ResponseCode.TOPIC_NOT_EXIST,
        PutStatus.NOT_FOUND: ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST,
    }.get(exc.status, ResponseCode.SYSTEM_ERROR)
    return cmd.response_to(code, f"{exc.status.value}: {exc.reason}"[:500])


async def delete_topic(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = field_text(cmd, "topic")
    try:
        await ctx.store.delete_topic(topic)
    except StoreError as exc:
        return store_refusal(cmd, exc)
    ctx.seen_topics.pop(topic, None)  # a send that creates it again announces it at once
    ctx.topics_changed()  # registers again, with the topic table without it
    return cmd.response_to(ResponseCode.SUCCESS, f"topic {topic} deleted")


async def topic_stats(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = field_text(cmd, "topic")
    cfg = ctx.store.topic(topic)
    if cfg is None:
        return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist")
    table = {}
    for queue in range(cfg.queue_count):
        low, high = ctx.store.min_offset(topic, queue), ctx.store.max_offset(topic, queue)
        stamp = 0
        if high > low:
            last = await ctx.store.get_messages("", topic, queue, high - 1, 1)
            stamp = last.messages[0].store_timestamp if last.messages else 0
        table[message_queue(ctx.config.broker_name, topic, queue)] = {
            "lastUpdateTimestamp": stamp, "maxOffset": high, "minOffset": low,
        }  # fmt: skip
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps({"offsetTable": table}))


async def consume_stats(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "consumerGroup")
    topic = field_text(cmd, "topic", "")
    if topic and ctx.store.topic(topic) is None:
        return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist")
    try:
        rows = ctx.store.progress(group, topic or None)
    except StoreError as exc:
        return store_refusal(cmd, exc)
    if not rows and not topic:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"consume stats of group {group} is empty")
    table = {
        message_queue(ctx.config.broker_name, r.topic, r.queue_id): {
            "brokerOffset": max(r.broker_offset, 0), "consumerOffset": max(r.consumer_offset, 0),
            "lastTimestamp": r.last_consume_ms,
        }
        for r in rows
    }  # fmt: skip
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps({"consumeTps": 0.0, "offsetTable": table}))


R = RequestCode
HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {
    R.DELETE_TOPIC_IN_BROKER: delete_topic,
    R.GET_TOPIC_STATS_INFO: topic_stats,
    R.GET_CONSUME_STATS: consume_stats,
}
