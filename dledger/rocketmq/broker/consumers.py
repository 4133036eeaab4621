"""Client management through remoting: HEART_BEAT, UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP (with
NOTIFY_CONSUMER_IDS_CHANGED to a group's consumers when its membership changes), LOCK_BATCH_MQ and
UNLOCK_BATCH_MQ for orderly consumers.

A heartbeat from a consumer group in clustering mode makes sure its retry topic `%RETRY%<group>` exists
(one queue; created on the master), as RocketMQ's broker does, so that messages handed back can be
consumed. Bodies are JSON in fastjson's dialect; a malformed body answers SYSTEM_ERROR with one line.
"""

from __future__ import annotations

import logging
from typing import Any

from dledger.broker_adapter import StoreError
from dledger.rocketmq.broker.context import BrokerContext, field_text
from dledger.rocketmq.broker.send import ensure_group_topic
from dledger.rocketmq.broker.storemap import retry_topic
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = [
    "get_consumer_list",
    "heart_beat",
    "lock_batch",
    "notify_changed",
    "unlock_batch",
    "unregister_client",
]

log = logging.getLogger("dledger.rocketmq.broker.face")


def _body(cmd: RemotingCommand) -> tuple[Any, RemotingCommand | None]:
    try:
        return fastjson.loads(cmd.body), None
    except ValueError as exc:
        return None, cmd.response_to(ResponseCode.SYSTEM_ERROR, f"the body is not JSON: {exc}"[:300])


def notify_changed(ctx: BrokerContext, groups: list[str]) -> None:
    """Tell every consumer of these groups that the group changed (oneway), so that they rebalance now."""
    for group in dict.fromkeys(groups):
        for client in ctx.clients.group_members(group):
            conn = client.conn
            if getattr(conn, "is_open", False):
                try:
                    conn.send_oneway(
                        RemotingCommand.request(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, {"consumerGroup": group})
                    )
                except Exception as exc:  # a connection closing under us: the client re-heartbeats anyway
                    log.debug("notifying %s failed: %s", client.client_id, exc)


async def _ensure_retry_topic(ctx: BrokerContext, group: str) -> None:
    try:
        await ensure_group_topic(ctx, retry_topic(group))
    except StoreError as exc:
        log.info("creating the retry topic of %s failed: %s", group, exc.reason)


async def heart_beat(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    data, error = _body(cmd)
    if error is not None:
        return error
    changed, consumers = ctx.clients.heartbeat(conn, data)
    for client in consumers:
        client.language, client.version = cmd.language, cmd.version
    if ctx.store.is_master:
        for client in consumers:
            if client.message_model == "CLUSTERING" and ctx.store.topic(retry_topic(client.group)) is None:
                ctx.spawn(_ensure_retry_topic(ctx, client.group), f"creating the retry topic of {client.group}")
    notify_changed(ctx, changed)
    return cmd.response_to(ResponseCode.SUCCESS)


async def unregister_client(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    client_id = field_text(cmd, "clientID")
    left = ctx.clients.unregister(client_id, field_text(cmd, "producerGroup", ""), field_text(cmd, "consumerGroup", ""))
    notify_changed(ctx, left)
    return cmd.response_to(ResponseCode.SUCCESS)


async def get_consumer_list(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    group = field_text(cmd, "consumerGroup")
    notify_changed(ctx, ctx.clients.prune())
    ids = ctx.clients.consumer_ids(group)
    if not ids:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, f"no consumer for this group, {group}")
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps({"consumerIdList": ids}))


def _queues(data: Any) -> list[tuple[str, str, int]]:
    out = []
    for mq in data.get("mqSet") or [] if isinstance(data, dict) else []:
        if isinstance(mq, dict) and isinstance(mq.get("topic"), str) and isinstance(mq.get("queueId"), int):
            out.append((mq["topic"], str(mq.get("brokerName") or ""), mq["queueId"]))
    return out


def _group_and_client(data: Any) -> tuple[str, str]:
    if not isinstance(data, dict):
        return "", ""
    group, client = data.get("consumerGroup"), data.get("clientId")
    return (group if isinstance(group, str) else ""), (client if isinstance(client, str) else "")


async def lock_batch(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    data, error = _body(cmd)
    if error is not None:
        return error
    group, client = _group_and_client(data)
    if not group or not client:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, "the lock request names no consumerGroup or clientId")
    held = ctx.clients.lock(group, client, _queues(data))
    body = {"lockOKMQSet": [{"topic": t, "brokerName": b, "queueId": q} for t, b, q in held]}
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(body))


async def unlock_batch(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    data, error = _body(cmd)
    if error is not None:
        return error
    group, client = _group_and_client(data)
    ctx.clients.unlock(group, client, _queues(data))
    return cmd.response_to(ResponseCode.SUCCESS)
