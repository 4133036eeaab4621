"""Resetting a consumer group's offsets through remoting: INVOKE_BROKER_TO_RESET_OFFSET, as mqadmin's
`resetOffsetByTime` sends it (header `ResetOffsetRequestHeader`: `topic`, `group`, `timestamp`, `isForce`,
and RocketMQ 5's optional `queueId` / `offset` for one queue set to one offset).

For each queue of the topic the new offset is the first one stored at or after `timestamp` (the queue's end
for -1); without `isForce` an offset only moves back (a later target keeps the group's own). The broker
commits the new offsets itself (replicated commands on the master, as every offset commit; a follower relays
the request, see `forward.py`), so the group's next pull starts there whether or not it is online, as with
RocketMQ 5's server-side reset; each online consumer of the group is also sent RESET_CONSUMER_CLIENT_OFFSET
(oneway, body `ResetOffsetBody`) so it drops what it fetched and does not commit its old position again. The
response body is the `ResetOffsetBody` of the offsets set: `{"offsetTable": {MessageQueue: offset}}`.

Invariants: an unknown topic answers TOPIC_NOT_EXIST and a group with neither a position on the topic, nor
settings, nor an online consumer answers SUBSCRIPTION_GROUP_NOT_EXIST, both changing nothing; a queue id
outside the topic answers SYSTEM_ERROR; an explicit offset is clamped to the queue's stored range.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from dledger.broker_adapter import StoreError
from dledger.rocketmq.broker.admin_stats import message_queue, store_refusal
from dledger.rocketmq.broker.context import BrokerContext, bool_field, int_field, name_field
from dledger.rocketmq.broker.offsets import commit
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = ["HANDLERS", "target_offsets"]

log = logging.getLogger("dledger.rocketmq.broker.face")


def target_offsets(
    ctx: BrokerContext, group: str, topic: str, queues: list[int], timestamp: int, force: bool, offset: int
) -> dict[int, int]:
    """queue -> the offset the group is reset to (its own where a non-forced reset would move it forward)."""
    store = ctx.store
    out = {}
    for queue in queues:
        low, high = store.min_offset(topic, queue), store.max_offset(topic, queue)
        if offset >= 0:
            target = min(max(offset, low), high)
        elif timestamp == -1:
            target = high
        else:
            target = store.offset_for_timestamp(topic, queue, timestamp)
        current = store.committed_offset(group, topic, queue)
        out[queue] = target if force or current < 0 or target < current else current
    return out


async def reset_offset(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = name_field(cmd, "topic", "topic")
    group = name_field(cmd, "group", "group")
    timestamp = int_field(cmd, "timestamp")
    force = bool_field(cmd, "isForce")
    queue_id = int_field(cmd, "queueId", -1)
    offset = int_field(cmd, "offset", -1)
    cfg = ctx.store.topic(topic)
    if cfg is None:
        return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"reset offset failed, no topic {topic} in this broker")
    if queue_id >= cfg.queue_count:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"queue {queue_id} of {topic} does not exist")
    queues = [queue_id] if queue_id >= 0 else list(range(cfg.queue_count))
    known = (
        any(ctx.store.committed_offset(group, topic, q) >= 0 for q in range(cfg.queue_count))
        or ctx.store.group_config(group) is not None
        or bool(ctx.clients.group_members(group))
    )
    if not known:
        return cmd.response_to(
            ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, f"the consumer group {group} has no offset on {topic}"
        )
    offsets = target_offsets(ctx, group, topic, queues, timestamp, force, offset if queue_id >= 0 else -1)
    try:
        for queue, value in offsets.items():
            if not await commit(ctx, group, topic, queue, value):
                leader = ctx.store.leader_address()
                return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, f"not the master (the leader is {leader})")
    except StoreError as exc:
        return store_refusal(cmd, exc)
    name = ctx.config.broker_name
    body = fastjson.dumps({"offsetTable": {message_queue(name, topic, q): v for q, v in offsets.items()}})
    notice = {"topic": topic, "group": group, "timestamp": str(timestamp), "isForce": str(force).lower()}
    for member in ctx.clients.group_members(group):
        try:
            member.conn.send_oneway(RemotingCommand.request(RequestCode.RESET_CONSUMER_CLIENT_OFFSET, notice, body))
        except Exception as exc:  # a closed connection: that consumer is gone anyway
            log.info("reset notice to %s not sent: %s", member.client_id, exc)
    return cmd.response_to(ResponseCode.SUCCESS, None, None, body)


HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {
    RequestCode.INVOKE_BROKER_TO_RESET_OFFSET: reset_offset,
}
