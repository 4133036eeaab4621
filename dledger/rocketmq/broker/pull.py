"""PULL_MESSAGE: messages of one consume queue in RocketMQ's stored format, with long polling and filters.

- Filter: the request's own subscription (sys flag FLAG_SUBSCRIPTION) or the group's from its heartbeat;
  TAG expressions ("*", "TagA || TagB") are applied by the store on its tag hashes and then on the tags,
  SQL92 expressions on the message properties (as RocketMQ exposes them: user properties, TAGS, KEYS).
- Long polling (FLAG_SUSPEND): when nothing is at the offset yet the pull is held until the store applies
  more entries or `suspendTimeoutMillis` (capped by `remotingLongPollMaxMs`) passes, then answers
  PULL_NOT_FOUND.
- FLAG_COMMIT_OFFSET commits the consumer's offset in the background (on the master; replicated).
- Statuses as RocketMQ's PullMessageProcessor answers them: FOUND -> SUCCESS, nothing new -> PULL_NOT_FOUND,
  nothing matched in the scanned range -> PULL_RETRY_IMMEDIATELY (the client moves on to nextBeginOffset),
  an offset out of the queue's range -> PULL_OFFSET_MOVED with the offset to use; every response carries
  nextBeginOffset, minOffset, maxOffset and suggestWhichBrokerId (0: the master).

Invariant: a pull never returns a message beyond this replica's applied (hence committed) entries.
"""

from __future__ import annotations

import time

from dledger.broker_adapter import GetResult, GetStatus
from dledger.broker_adapter.sql92 import SqlError, parse
from dledger.rocketmq.broker.context import BrokerContext, field_text, int_field
from dledger.rocketmq.broker.offsets import commit_in_background
from dledger.rocketmq.broker.storemap import remoting_properties, to_message_ext
from dledger.rocketmq.remoting.codes import ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import MessageFormatError, encode_stored

__all__ = ["FLAG_COMMIT_OFFSET", "FLAG_SUBSCRIPTION", "FLAG_SUSPEND", "pull_message"]

FLAG_COMMIT_OFFSET = 0x1
FLAG_SUSPEND = 0x2
FLAG_SUBSCRIPTION = 0x4
MAX_PULL_MESSAGES = 1024
MAX_PULL_BYTES = 8 << 20


def _header(result: GetResult, next_offset: int) -> dict[str, str]:
    return {
        "suggestWhichBrokerId": "0",
        "nextBeginOffset": str(next_offset),
        "minOffset": str(result.min_offset),
        "maxOffset": str(result.max_offset),
    }


async def pull_message(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "consumerGroup")
    topic = field_text(cmd, "topic")
    queue = int_field(cmd, "queueId")
    offset = int_field(cmd, "queueOffset")
    max_nums = min(max(int_field(cmd, "maxMsgNums", 32), 1), MAX_PULL_MESSAGES)
    sys_flag = int_field(cmd, "sysFlag", 0)
    if ctx.store.topic(topic) is None:
        return cmd.response_to(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist, apply first please!")
    if sys_flag & FLAG_SUBSCRIPTION:
        expression = field_text(cmd, "subscription", "*") or "*"
        kind = field_text(cmd, "expressionType", "TAG") or "TAG"
    else:
        sub = ctx.clients.subscription(group, topic)
        expression, kind = (sub.expression, sub.expression_type) if sub is not None else ("*", "TAG")
    sql = None
    if kind.upper() == "SQL92":
        try:
            sql = parse(expression)
        except SqlError as exc:
            return cmd.response_to(
                ResponseCode.SUBSCRIPTION_PARSE_FAILED, f"parse the consumer's subscription failed: {exc}"
            )
    elif kind.upper() != "TAG":
        return cmd.response_to(
            ResponseCode.SUBSCRIPTION_PARSE_FAILED, f"expression type {kind[:20]!r} is not supported"
        )
    if sys_flag & FLAG_COMMIT_OFFSET:
        commit = int_field(cmd, "commitOffset", -1)
        if commit >= 0:
            commit_in_background(ctx, group, topic, queue, commit)
    hold_ms = min(int_field(cmd, "suspendTimeoutMillis", 0), ctx.config.long_poll_max_ms)
    deadline = time.monotonic() + (hold_ms / 1000 if sys_flag & FLAG_SUSPEND else 0.0)
    tags = None if sql is not None else expression
    while True:
        result = await ctx.store.get_messages(group, topic, queue, offset, max_nums, MAX_PULL_BYTES, tags)
        nothing_yet = result.status is GetStatus.OFFSET_OVERFLOW_ONE or (
            result.status is GetStatus.NO_MESSAGE_IN_QUEUE and offset == 0
        )
        left = deadline - time.monotonic()
        if not nothing_yet or left <= 0:
            break
        await ctx.wait_applied(left)
    return _answer(ctx, cmd, result, offset, sql)


def _answer(ctx: BrokerContext, cmd: RemotingCommand, result: GetResult, offset: int, sql: object) -> RemotingCommand:
    status = result.status
    if status is GetStatus.FOUND:
        host = ctx.store_host
        chunks = []
        for stored in result.messages:
            if sql is not None and not sql.matches(remoting_properties(stored.message)):  # type: ignore[attr-defined]
                continue
            try:
                chunks.append(encode_stored(to_message_ext(stored, host)))
            except MessageFormatError:
                continue  # a message the stored format cannot carry (a topic over 127 bytes): skipped
        if chunks:
            return cmd.response_to(ResponseCode.SUCCESS, None, _header(result, result.next_offset), b"".join(chunks))
        return cmd.response_to(
            ResponseCode.PULL_RETRY_IMMEDIATELY, "no matched message", _header(result, result.next_offset)
        )
    if status in (GetStatus.NO_MATCHED_MESSAGE, GetStatus.MESSAGE_WAS_REMOVING):
        return cmd.response_to(ResponseCode.PULL_RETRY_IMMEDIATELY, status.value, _header(result, result.next_offset))
    if status is GetStatus.OFFSET_OVERFLOW_ONE or (status is GetStatus.NO_MESSAGE_IN_QUEUE and offset == 0):
        return cmd.response_to(ResponseCode.PULL_NOT_FOUND, "no new message", _header(result, offset))
    if status is GetStatus.NO_MATCHED_LOGIC_QUEUE:
        return cmd.response_to(ResponseCode.PULL_OFFSET_MOVED, "no such queue", _header(result, 0))
    # NO_MESSAGE_IN_QUEUE above offset 0, OFFSET_TOO_SMALL, OFFSET_OVERFLOW_BADLY: the store says where to go
    target = 0 if status is GetStatus.NO_MESSAGE_IN_QUEUE else result.next_offset
    return cmd.response_to(ResponseCode.PULL_OFFSET_MOVED, status.value, _header(result, target))
