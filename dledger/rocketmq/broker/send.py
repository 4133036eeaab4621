"""Producing through remoting: SEND_MESSAGE, SEND_MESSAGE_V2 (the compact a..n header), SEND_BATCH_MESSAGE,
and CONSUMER_SEND_MSG_BACK (a consumer hands back a message it failed to consume).

Invariants:
- SUCCESS means the message (a batch: every message, in one log entry) is committed on a quorum and applied
  on this replica (the store's PUT_OK); an outcome the store cannot tell answers FLUSH_SLAVE_TIMEOUT (the
  client reports a send status that is not SEND_OK; the message may still be stored), a follower or a
  replica that is not master yet answers SERVICE_NOT_AVAILABLE with the leader in the remark, so that
  clients retry elsewhere and nothing is written;
- the response's `msgId` is RocketMQ's offset message id (store host and physical offset; comma-joined for
  a batch), `queueId` / `queueOffset` those of the first message (-1 for delayed and half messages);
- a send to `%RETRY%<group>` whose reconsume count reached the consumer's maxReconsumeTimes goes to
  `%DLQ%<group>` instead (what RocketMQ does for a consumer that resends through its producer);
- CONSUMER_SEND_MSG_BACK puts a copy (same body, tag, keys, message id; reconsume count plus one; the
  original topic in RETRY_TOPIC) into `%RETRY%<group>`, delayed by level `3 + reconsume count` unless the
  consumer asks for a level, or into `%DLQ%<group>` once the count reached maxReconsumeTimes (or the level
  is negative); retry and dead-letter topics are created with one queue when first needed;
- a send that makes the store auto-create its topic tells the topics-changed listeners (the NameServer
  registration) at once, unless this face saw the topic exist within the last second and did not delete
  it since (deleted elsewhere and created again by a send within a second: the next periodic registration
  carries it).
"""

from __future__ import annotations

import time

from dledger.broker_adapter import Message, PutStatus, StoreError
from dledger.rocketmq.broker.context import BrokerContext, field_text, int_field
from dledger.rocketmq.broker.storemap import (
    DLQ_GROUP_TOPIC_PREFIX,
    RECONSUME_TIMES,
    RETRY_GROUP_TOPIC_PREFIX,
    SYSTEM_PREFIX,
    RemotingMessageError,
    SendFields,
    dlq_topic,
    from_remoting,
    physical_offset,
    retry_topic,
)
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import MessageFormatError, decode_batch, offset_msg_id

__all__ = ["ensure_group_topic", "send_message", "send_message_back", "v1_header"]

V2_NAMES = {
    "a": "producerGroup", "b": "topic", "c": "defaultTopic", "d": "defaultTopicQueueNums", "e": "queueId",
    "f": "sysFlag", "g": "bornTimestamp", "h": "flag", "i": "properties", "j": "reconsumeTimes", "k": "unitMode",
    "l": "maxReconsumeTimes", "m": "batch", "n": "brokerName",
}  # fmt: skip
_SEEN_TOPIC_S = 1.0
_MAX_SEEN_TOPICS = 10_000
_STATUS = {
    PutStatus.NOT_LEADER: ResponseCode.SERVICE_NOT_AVAILABLE,
    PutStatus.SERVICE_NOT_AVAILABLE: ResponseCode.SERVICE_NOT_AVAILABLE,
    PutStatus.DISK_FULL: ResponseCode.SERVICE_NOT_AVAILABLE,
    PutStatus.FLUSH_OR_REPLICA_TIMEOUT: ResponseCode.FLUSH_SLAVE_TIMEOUT,
    PutStatus.MESSAGE_ILLEGAL: ResponseCode.MESSAGE_ILLEGAL,
    PutStatus.TOPIC_NOT_FOUND: ResponseCode.TOPIC_NOT_EXIST,
}


def v1_header(cmd: RemotingCommand) -> RemotingCommand:
    """The request with a V2 (a..n) send header renamed to the V1 field names."""
    if "topic" in cmd.ext_fields or "b" not in cmd.ext_fields:
        return cmd
    fields = {V2_NAMES.get(k, k): v for k, v in cmd.ext_fields.items()}
    return RemotingCommand(cmd.code, cmd.language, cmd.version, cmd.opaque, cmd.flag, cmd.remark, fields, cmd.body)


def _peer_ip(conn: object) -> str:
    return str(getattr(conn, "peer", "") or "")


async def ensure_group_topic(ctx: BrokerContext, topic: str) -> None:
    """Create a retry or dead-letter topic (one queue) if it does not exist yet."""
    if ctx.store.topic(topic) is None:
        await ctx.store.create_topic(topic, 1)
        ctx.topics_changed()


def _maybe_new_topic(ctx: BrokerContext, topic: str) -> bool:
    """Whether the store may auto-create `topic` with this send (autoCreateTopicEnable); a topic seen to
    exist less than `_SEEN_TOPIC_S` ago is not looked up again (a lookup is a store read per send)."""
    now = time.monotonic()
    seen = ctx.seen_topics.get(topic)
    if seen is not None and now - seen < _SEEN_TOPIC_S:
        return False
    if ctx.store.topic(topic) is None:
        ctx.seen_topics.pop(topic, None)
        return True
    if len(ctx.seen_topics) >= _MAX_SEEN_TOPICS:
        ctx.seen_topics.clear()
    ctx.seen_topics[topic] = now
    return False


async def _put(ctx: BrokerContext, cmd: RemotingCommand, msgs: list[Message]) -> RemotingCommand:
    new_topic = _maybe_new_topic(ctx, msgs[0].topic)
    result = await ctx.put(msgs)
    if result.ok and new_topic:
        ctx.topics_changed()
    if not result.ok:
        code = _STATUS.get(result.status, ResponseCode.SYSTEM_ERROR)
        where = f" (the leader is {result.leader_address})" if result.leader_address else ""
        return cmd.response_to(code, f"{result.status.value}: {result.reason}{where}"[:500])
    host = ctx.store_host
    reader = ctx.store.reader
    ids = []
    for msg_id in result.msg_ids:
        place = reader.locate(msg_id) if reader is not None else None
        ids.append(offset_msg_id(host, physical_offset(*place)) if place else "")
    fields = {
        "msgId": ",".join(ids),
        "queueId": str(result.queue_id),
        "queueOffset": str(result.queue_offset),
    }
    if msgs[0].transaction:
        fields["transactionId"] = result.msg_ids[0]
    return cmd.response_to(ResponseCode.SUCCESS, None, fields)


async def send_message(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    req = v1_header(cmd)
    topic = field_text(req, "topic")
    queue_id = int_field(req, "queueId", -1)
    sys_flag = int_field(req, "sysFlag", 0)
    reconsume = int_field(req, "reconsumeTimes", 0)
    max_times = int_field(req, "maxReconsumeTimes", -1)
    if max_times < 0:
        max_times = ctx.config.max_reconsume_times
    if topic.startswith(RETRY_GROUP_TOPIC_PREFIX) and reconsume >= max_times:
        topic, queue_id = dlq_topic(topic[len(RETRY_GROUP_TOPIC_PREFIX) :]), 0
    if topic.startswith((RETRY_GROUP_TOPIC_PREFIX, DLQ_GROUP_TOPIC_PREFIX)):
        try:
            await ensure_group_topic(ctx, topic)
        except StoreError as exc:
            return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, exc.reason[:500])
        if queue_id >= 1:
            queue_id = 0
    common = {
        "topic": topic,
        "queue_id": queue_id,
        "born_timestamp": int_field(req, "bornTimestamp", 0),
        "reconsume_times": reconsume,
        "born_host": _peer_ip(conn).rpartition(":")[0],
    }
    opts = ctx.store.options
    try:
        if cmd.code == RequestCode.SEND_BATCH_MESSAGE or field_text(req, "batch", "").lower() in ("true", "1"):
            items = decode_batch(cmd.body)
            if not items:
                return cmd.response_to(ResponseCode.MESSAGE_ILLEGAL, "the batch is empty")
            fields = [SendFields(body=i.body, flag=i.flag, properties=i.properties, **common) for i in items]  # type: ignore[arg-type]
        else:
            fields = [
                SendFields(
                    body=cmd.body, sys_flag=sys_flag, flag=int_field(req, "flag", 0),
                    properties=field_text(req, "properties", ""), **common,  # type: ignore[arg-type]
                )
            ]  # fmt: skip
        now = ctx.store.stamp_time()
        msgs = [from_remoting(f, now_ms=now, levels=ctx.config.delay_levels_ms, max_body=opts.max_message_bytes)
                for f in fields]  # fmt: skip
    except RemotingMessageError as exc:
        return cmd.response_to(exc.code, str(exc))
    except MessageFormatError as exc:
        return cmd.response_to(ResponseCode.MESSAGE_ILLEGAL, str(exc))
    return await _put(ctx, cmd, msgs)


async def send_message_back(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "group")
    origin_id = field_text(cmd, "originMsgId", "")
    delay_level = int_field(cmd, "delayLevel", 0)
    max_times = int_field(cmd, "maxReconsumeTimes", -1)
    if max_times < 0:
        max_times = ctx.config.max_reconsume_times
    stored = await ctx.store.query_by_id(origin_id) if origin_id else None
    if stored is None:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"look message by id failed: {origin_id[:80]!r}")
    msg = stored.message
    props = dict(msg.properties)
    try:
        times = max(int(props.get(RECONSUME_TIMES, "0")), 0)
    except ValueError:
        times = 0
    props.setdefault(SYSTEM_PREFIX + "RETRY_TOPIC", stored.topic or msg.topic)  # a retry copy keeps its own
    props.setdefault(SYSTEM_PREFIX + "ORIGIN_MESSAGE_ID", origin_id)
    props[RECONSUME_TIMES] = str(times + 1)
    delivery = 0
    if times >= max_times or delay_level < 0:
        topic = dlq_topic(group)
    else:
        topic = retry_topic(group)
        level = delay_level if delay_level > 0 else 3 + times
        levels = ctx.config.delay_levels_ms
        delivery = ctx.store.stamp_time() + levels[min(level, len(levels)) - 1]
    try:
        await ensure_group_topic(ctx, topic)
    except StoreError as exc:
        return cmd.response_to(ResponseCode.SERVICE_NOT_AVAILABLE, exc.reason[:500])
    copy = msg.replace(topic=topic, queue_id=0, properties=props, delivery_timestamp=delivery, transaction=False)
    response = await _put(ctx, cmd, [copy])
    return cmd.response_to(response.code, response.remark)
