"""Lookups and administration through remoting (what mqadmin and the Dashboard use most): topics
(UPDATE_AND_CREATE_TOPIC, GET_ALL_TOPIC_CONFIG), messages by key and by offset message id (QUERY_MESSAGE,
VIEW_MESSAGE_BY_ID), the broker's runtime table (GET_BROKER_RUNTIME_INFO) and the clients connected to this
replica (GET_CONSUMER_CONNECTION_LIST, GET_PRODUCER_CONNECTION_LIST).

The state is the store's, the same that `dledger admin` and the gRPC face show: a topic created here is a
replicated command on the master (a follower answers SERVICE_NOT_AVAILABLE) and registers with the
NameServers at once. Client connections are per replica, as in RocketMQ. `HANDLERS` maps each request code
this module answers to its handler; the broker merges it into its table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from dledger.broker_adapter import MessageFormatError, MessageType, StoredMessage, TopicConfig
from dledger.broker_adapter.message import decode_message, encoded_size
from dledger.rocketmq.broker.context import BrokerContext, field_text, int_field
from dledger.rocketmq.broker.storemap import split_physical_offset, to_message_ext
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import LanguageCode, RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import encode_stored

__all__ = ["HANDLERS", "topic_json"]

PERM_READ_WRITE = 6
_BOOT_MS = int(time.time() * 1000)


def _language(code: int) -> str:
    try:
        return LanguageCode(code).name
    except ValueError:
        return "OTHER"


def topic_json(t: TopicConfig) -> dict[str, object]:
    """A TopicConfig as RocketMQ's broker writes it."""
    return {
        "topicName": t.name, "readQueueNums": t.queue_count, "writeQueueNums": t.queue_count,
        "perm": PERM_READ_WRITE, "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0,
        "order": t.message_type == MessageType.FIFO,
    }  # fmt: skip


async def create_topic(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = field_text(cmd, "topic")
    queues = max(int_field(cmd, "readQueueNums", 8), int_field(cmd, "writeQueueNums", 8))
    order = field_text(cmd, "order", "false").lower() == "true"
    cfg = await ctx.store.create_topic(topic, queues, MessageType.FIFO if order else MessageType.NORMAL)
    ctx.topics_changed()
    return cmd.response_to(ResponseCode.SUCCESS, f"topic {cfg.name} has {cfg.queue_count} queues")


async def all_topic_config(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    table = {t.name: topic_json(t) for t in ctx.store.topics()}
    body = {"topicConfigTable": table, "dataVersion": {"timestamp": _BOOT_MS, "counter": len(table)}}
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(body))


async def query_message(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    topic = field_text(cmd, "topic")
    key = field_text(cmd, "key")
    max_num = min(max(int_field(cmd, "maxNum", 32), 1), 64)
    begin = int_field(cmd, "beginTimestamp", 0)
    end = int_field(cmd, "endTimestamp", 1 << 62)
    found = await ctx.store.query_by_key(topic, key, max_num, begin, end)
    if not found:  # a unique key (UNIQ_KEY) is the store's message id
        by_id = await ctx.store.query_by_id(key)
        found = [by_id] if by_id is not None and by_id.topic == topic else []
    if not found:
        return cmd.response_to(ResponseCode.QUERY_NOT_FOUND, f"no message of {topic} with key {key[:64]!r}")
    host = ctx.store_host
    body = b"".join(encode_stored(to_message_ext(s, host)) for s in found)
    last = max(s.store_timestamp for s in found)
    fields = {"indexLastUpdateTimestamp": str(last), "indexLastUpdatePhyoffset": "0"}
    return cmd.response_to(ResponseCode.SUCCESS, None, fields, body)


async def view_message(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    index, pos = split_physical_offset(int_field(cmd, "offset"))
    reader = ctx.store.reader
    data = await reader.entry_data(index) if reader is not None and index > 0 else None
    try:
        if data is None:
            raise MessageFormatError("no such entry")
        msg = decode_message(data[pos : pos + encoded_size(data, pos)])
    except MessageFormatError:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"no message at physical offset {index << 32 | pos}")
    stored = await ctx.store.query_by_id(msg.msg_id) if msg.msg_id else None
    if stored is None or (stored.log_index, stored.log_pos) != (index, pos):  # a later copy took the id
        stored = StoredMessage(msg, msg.topic, max(msg.queue_id, 0), 0, index, msg.store_timestamp, pos)
    return cmd.response_to(ResponseCode.SUCCESS, None, None, encode_stored(to_message_ext(stored, ctx.store_host)))


async def runtime_info(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    store = ctx.store
    table = {
        "brokerVersionDesc": "V4_9_4",
        "brokerVersion": "401",
        "bootTimestamp": str(_BOOT_MS),
        "brokerName": ctx.config.broker_name,
        "brokerClusterName": ctx.config.cluster_name,
        "brokerRole": "SYNC_MASTER" if store.is_master else "SLAVE",
        "dLedgerLeader": store.leader_address(),
        "topicCount": str(len(store.topics())),
        "consumerGroupCount": str(len(ctx.clients.groups())),
        "earliestMessageTimeStamp": "0",
    }
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps({"table": table}))


async def consumer_connections(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "consumerGroup")
    members = ctx.clients.group_members(group)
    if not members:
        return cmd.response_to(ResponseCode.CONSUMER_NOT_ONLINE, f"the consumer group [{group}] not online")
    first = members[0]
    body = {
        "connectionSet": [
            {"clientId": m.client_id, "clientAddr": getattr(m.conn, "peer", ""), "language": _language(m.language),
             "version": m.version}
            for m in members
        ],
        "subscriptionTable": {
            t: {"topic": t, "subString": s.expression, "expressionType": s.expression_type, "tagsSet": sorted(s.tags),
                "subVersion": s.version}
            for t, s in first.subscriptions.items()
        },
        "consumeType": first.consume_type,
        "messageModel": first.message_model,
        "consumeFromWhere": first.consume_from_where,
    }  # fmt: skip
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(body))


async def producer_connections(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "producerGroup")
    members = ctx.clients.producers.get(group, {})
    body = {
        "connectionSet": [{"clientId": cid, "clientAddr": getattr(c, "peer", "")} for cid, (c, _) in members.items()]
    }
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(body))


R = RequestCode
HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {
    R.UPDATE_AND_CREATE_TOPIC: create_topic,
    R.GET_ALL_TOPIC_CONFIG: all_topic_config,
    R.QUERY_MESSAGE: query_message,
    R.VIEW_MESSAGE_BY_ID: view_message,
    R.GET_BROKER_RUNTIME_INFO: runtime_info,
    R.GET_CONSUMER_CONNECTION_LIST: consumer_connections,
    R.GET_PRODUCER_CONNECTION_LIST: producer_connections,
}
