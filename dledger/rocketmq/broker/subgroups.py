"""Subscription groups through remoting: UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
DELETE_SUBSCRIPTIONGROUP, as mqadmin's updateSubGroup / deleteSubGroup and the Dashboard send them.

They read and write the store's consumer group settings, the same `dledger admin group` manages (replicated
commands on the master; a follower relays the writes, see `forward.py`). A SubscriptionGroupConfig maps so:

| RocketMQ field | here |
| --- | --- |
| `groupName` | the group |
| `retryMaxTimes` | max attempts - 1 (RocketMQ 5's proxy delivers a message retryMaxTimes + 1 times) |
| `consumeMessageOrderly` | FIFO |
| `groupRetryPolicy.exponentialRetryPolicy` `initial`, `max`, `multiplier` | the backoff |

Every other field is answered with RocketMQ's default and ignored on update. Invariants: the body is
untrusted JSON: anything but an object with a valid `groupName` and in-range values answers SYSTEM_ERROR
with one line and changes nothing; an update keeps what the body does not say; deleting a group that has no
settings answers SUCCESS, as RocketMQ does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dledger.broker_adapter import StoreError
from dledger.broker_adapter.admin_model import GroupConfig
from dledger.rocketmq.broker.admin_stats import store_refusal
from dledger.rocketmq.broker.context import BrokerContext, HeaderError, field_text
from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = ["HANDLERS", "config_json"]

_BOOT_MS = int(time.time() * 1000)


def config_json(cfg: GroupConfig) -> dict[str, Any]:
    """A SubscriptionGroupConfig as RocketMQ's broker writes it."""
    multiplier = cfg.backoff_multiplier_milli / 1000
    return {
        "brokerId": 0, "consumeBroadcastEnable": True, "consumeEnable": True, "consumeFromMinEnable": True,
        "consumeMessageOrderly": cfg.fifo, "consumeTimeoutMinute": 15, "groupName": cfg.name,
        "groupRetryPolicy": {
            "type": "EXPONENTIAL",
            "exponentialRetryPolicy": {
                "initial": cfg.backoff_initial_ms, "max": cfg.backoff_max_ms,
                "multiplier": int(multiplier) if multiplier.is_integer() else multiplier,
            },
        },
        "groupSysFlag": 0, "notifyConsumerIdsChangedEnable": True, "retryMaxTimes": cfg.max_attempts - 1,
        "retryQueueNums": 1, "whichBrokerWhenConsumeSlowly": 1,
    }  # fmt: skip


def _number(obj: Mapping[str, Any], key: str, default: int | float) -> int | float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise HeaderError(f"{key} is not a number: {str(value)[:40]!r}")
    return value


def _parse(body: bytes, base: Callable[[str], GroupConfig]) -> GroupConfig:
    try:
        obj = fastjson.loads(body)
    except ValueError as exc:
        raise HeaderError(f"the subscription group config is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HeaderError("the subscription group config is not a JSON object")
    name = obj.get("groupName")
    if not isinstance(name, str) or not name:
        raise HeaderError("the subscription group config has no groupName")
    cur = base(name)
    retries = _number(obj, "retryMaxTimes", cur.max_attempts - 1)
    orderly = obj.get("consumeMessageOrderly", cur.fifo)
    if not isinstance(orderly, bool):
        raise HeaderError("consumeMessageOrderly is not true or false")
    policy = obj.get("groupRetryPolicy") or {}
    expo = policy.get("exponentialRetryPolicy") if isinstance(policy, dict) else None
    expo = expo if isinstance(expo, dict) and policy.get("type", "EXPONENTIAL") == "EXPONENTIAL" else {}
    multiplier = _number(expo, "multiplier", cur.backoff_multiplier_milli / 1000)
    try:
        cfg = GroupConfig(
            name, max_attempts=int(retries) + 1,
            backoff_initial_ms=int(_number(expo, "initial", cur.backoff_initial_ms)),
            backoff_max_ms=int(_number(expo, "max", cur.backoff_max_ms)),
            backoff_multiplier_milli=round(multiplier * 1000), fifo=orderly, start=cur.start, start_ms=cur.start_ms,
        )  # fmt: skip
    except (OverflowError, ValueError):
        raise HeaderError("a value of the subscription group config is out of range") from None
    why = cfg.check()
    if why is not None:
        raise HeaderError(f"subscription group {name}: {why}")
    return cfg


async def update_group(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    store = ctx.store

    def base(name: str) -> GroupConfig:
        return store.group_config(name) or GroupConfig(name, max_attempts=store.options.max_delivery_attempts)

    cfg = _parse(cmd.body, base)
    try:
        await store.put_group(cfg, create=store.group_config(cfg.name) is None)
    except StoreError as exc:
        return store_refusal(cmd, exc)
    return cmd.response_to(ResponseCode.SUCCESS, None)


async def all_groups(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    table = {cfg.name: config_json(cfg) for cfg in ctx.store.group_configs()}
    body = {"subscriptionGroupTable": table, "dataVersion": {"counter": len(table), "timestamp": _BOOT_MS}}
    return cmd.response_to(ResponseCode.SUCCESS, None, None, fastjson.dumps(body))


async def delete_group(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    name = field_text(cmd, "groupName")
    if ctx.store.group_config(name) is not None:
        try:
            await ctx.store.delete_group(name)
        except StoreError as exc:
            return store_refusal(cmd, exc)
    return cmd.response_to(ResponseCode.SUCCESS, None)


R = RequestCode
HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {
    R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: update_group,
    R.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: all_groups,
    R.DELETE_SUBSCRIPTIONGROUP: delete_group,
}
