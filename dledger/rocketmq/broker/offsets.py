"""Consumer offsets and queue offsets through remoting: QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET,
GET_MAX_OFFSET, GET_MIN_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME.

Consumer offsets are the store's replicated group offsets, shared with the gRPC face (one group whichever
protocol it uses). A group that never committed an offset on a queue whose first message is still stored
(minimum offset 0) is told offset 0, as RocketMQ's broker answers while the queue's start is retained, so a
new group reads from the start; otherwise QUERY_NOT_FOUND and the client applies its consumeFromWhere.
Commits go through the log on the master only; a commit equal to the stored offset is not proposed again
(clients re-send every offset every few seconds).
"""

from __future__ import annotations

from dledger.broker_adapter import StoreError
from dledger.rocketmq.broker.context import BrokerContext, field_text, int_field
from dledger.rocketmq.remoting.codes import ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = [
    "commit_in_background",
    "earliest_store_time",
    "max_offset",
    "min_offset",
    "query_consumer_offset",
    "search_offset",
    "update_consumer_offset",
]


def _queue(ctx: BrokerContext, cmd: RemotingCommand) -> tuple[str, int, RemotingCommand | None]:
    topic = field_text(cmd, "topic")
    queue = int_field(cmd, "queueId")
    cfg = ctx.store.topic(topic)
    if cfg is None:
        return topic, queue, cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist")
    if not 0 <= queue < cfg.queue_count:
        return topic, queue, cmd.response_to(ResponseCode.SYSTEM_ERROR, f"queue {queue} of {topic} does not exist")
    return topic, queue, None


async def commit(ctx: BrokerContext, group: str, topic: str, queue: int, offset: int) -> bool:
    """Commit on the master unless the offset is stored already; False when this replica is not master."""
    if not ctx.store.is_master:
        return False
    if ctx.store.committed_offset(group, topic, queue) != offset:
        await ctx.store.commit_offset(group, topic, queue, offset)
    return True


def commit_in_background(ctx: BrokerContext, group: str, topic: str, queue: int, offset: int) -> None:
    if ctx.store.is_master and ctx.store.committed_offset(group, topic, queue) != offset:
        ctx.spawn(commit(ctx, group, topic, queue, offset), f"committing {group} {topic}:{queue}")


async def query_consumer_offset(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "consumerGroup")
    topic, queue, error = _queue(ctx, cmd)
    if error is not None:
        return error
    offset = ctx.store.committed_offset(group, topic, queue)
    if offset < 0:
        if ctx.store.min_offset(topic, queue) > 0:
            return cmd.response_to(ResponseCode.QUERY_NOT_FOUND, "Not found, the group has no offset on this queue")
        offset = 0
    return cmd.response_to(ResponseCode.SUCCESS, None, {"offset": str(offset)})


async def update_consumer_offset(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "consumerGroup")
    offset = int_field(cmd, "commitOffset")
    topic, queue, error = _queue(ctx, cmd)
    if error is not None:
        return error
    if offset < 0:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, "commitOffset must be >= 0")
    try:
        if not await commit(ctx, group, topic, queue, offset):
            leader = ctx.store.leader_address()
            return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, f"not the master (the leader is {leader})")
    except StoreError as exc:
        return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, exc.reason[:500])
    return cmd.response_to(ResponseCode.SUCCESS)


async def max_offset(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic, queue, error = _queue(ctx, cmd)
    if error is not None:
        return error
    return cmd.response_to(ResponseCode.SUCCESS, None, {"offset": str(ctx.store.max_offset(topic, queue))})


async def min_offset(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic, queue, error = _queue(ctx, cmd)
    if error is not None:
        return error
    return cmd.response_to(ResponseCode.SUCCESS, None, {"offset": str(ctx.store.min_offset(topic, queue))})


async def search_offset(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    timestamp = int_field(cmd, "timestamp")
    topic, queue, error = _queue(ctx, cmd)
    if error is not None:
        return error
    offset = ctx.store.offset_for_timestamp(topic, queue, timestamp)
    return cmd.response_to(ResponseCode.SUCCESS, None, {"offset": str(offset)})


async def earliest_store_time(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic, queue, error = _queue(ctx, cmd)
    if error is not None:
        return error
    low = ctx.store.min_offset(topic, queue)
    result = await ctx.store.get_messages("", topic, queue, low, 1)
    if not result.messages:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"no message in {topic}:{queue}")
    return cmd.response_to(ResponseCode.SUCCESS, None, {"timestamp": str(result.messages[0].store_timestamp)})
