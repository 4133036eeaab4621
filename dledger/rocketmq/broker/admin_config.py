"""The broker's settings through remoting: GET_BROKER_CONFIG and UPDATE_BROKER_CONFIG, as mqadmin's
`getBrokerConfig` / `updateBrokerConfig` send them.

GET_BROKER_CONFIG answers the remoting face's settings (see `config.py`) as a Java properties text body
(`key=value` lines) and a `version` header field holding the settings' `DataVersion` JSON; `secretKey` is
never shown. UPDATE_BROKER_CONFIG takes a properties body and changes this replica's settings at once, only
for the keys safe to change at runtime (`RUNTIME_KEYS`: read at each use); a body naming any other key is
refused with NO_PERMISSION and a remark naming the key, a bad value with SYSTEM_ERROR naming it, and either
refusal changes nothing. A change holds until the replica restarts (the broker's file is not rewritten:
edit it too); it is per replica, as a RocketMQ broker's config is per broker (mqadmin `-c` sends it to each).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable

from dledger.node.config import ConfigError
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.broker.context import BrokerContext, HeaderError
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand

__all__ = ["HANDLERS", "RUNTIME_KEYS", "parse_properties", "settings_text"]

#: key -> RemotingConfig field, the settings a running replica may change
RUNTIME_KEYS = {
    "maxReconsumeTimes": "max_reconsume_times",
    "remotingLongPollMaxMs": "long_poll_max_ms",
    "transactionTimeOut": "tx_timeout_ms",
    "transactionCheckInterval": "tx_check_interval_ms",
}
_UNITS = ((86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"))
_MAX_BODY = 64 * 1024


def _delay_spec(levels: tuple[int, ...]) -> str:
    return " ".join(next(f"{ms // n}{u}" for n, u in _UNITS if ms % n == 0 or u == "s") for ms in levels)


def settings_text(cfg: RemotingConfig) -> str:
    """The settings as `key=value` lines, sorted by key (never the secret key)."""
    values = {
        "listenPort": cfg.listen_port, "brokerIP1": cfg.broker_ip, "brokerName": cfg.broker_name,
        "brokerClusterName": cfg.cluster_name, "messageDelayLevel": _delay_spec(cfg.delay_levels_ms),
        "maxReconsumeTimes": cfg.max_reconsume_times, "remotingLongPollMaxMs": cfg.long_poll_max_ms,
        "transactionTimeOut": cfg.tx_timeout_ms, "transactionCheckInterval": cfg.tx_check_interval_ms,
        "accessKey": cfg.access_key, "aclEnable": str(cfg.access is not None).lower(),
        "remotingPeers": ";".join(sorted(cfg.remoting_peers.values())),
    }  # fmt: skip
    return "".join(f"{k}={v}\n" for k, v in sorted(values.items()))


def parse_properties(text: str) -> dict[str, str]:
    """Java properties lines (`key=value` or `key:value`; `#` and `!` comments); HeaderError on a line
    without a separator."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if cut < 0:
            raise HeaderError(f"the broker config line {line[:60]!r} is not key=value")
        out[line[:cut].strip()] = line[cut + 1 :].strip()
    return out


async def get_config(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    version = json.dumps({"counter": ctx.config_version, "timestamp": ctx.config_changed_ms}, separators=(",", ":"))
    return cmd.response_to(ResponseCode.SUCCESS, None, {"version": version}, settings_text(ctx.config).encode())


async def update_config(ctx: BrokerContext, cmd: RemotingCommand, conn: object) -> RemotingCommand:
    if not cmd.body or len(cmd.body) > _MAX_BODY:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, "the broker config body is empty or over 64 KiB")
    try:
        props = parse_properties(cmd.body.decode("utf-8"))
    except UnicodeDecodeError:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, "the broker config body is not UTF-8")
    fixed = sorted(set(props) - set(RUNTIME_KEYS))
    if fixed:
        return cmd.response_to(
            ResponseCode.NO_PERMISSION,
            f"{fixed[0][:80]} cannot be changed at runtime (only {', '.join(RUNTIME_KEYS)}); edit the broker's file",
        )
    try:
        parsed = RemotingConfig.from_properties(props)
    except ConfigError as exc:
        return cmd.response_to(ResponseCode.SYSTEM_ERROR, str(exc)[:500])
    changes = {RUNTIME_KEYS[k]: getattr(parsed, RUNTIME_KEYS[k]) for k in props}
    ctx.config = dataclasses.replace(ctx.config, **changes)
    ctx.config_version += 1
    ctx.config_changed_ms = int(time.time() * 1000)
    return cmd.response_to(ResponseCode.SUCCESS, None)


R = RequestCode
HANDLERS: dict[int, Callable[[BrokerContext, RemotingCommand, object], Awaitable[RemotingCommand]]] = {
    R.GET_BROKER_CONFIG: get_config,
    R.UPDATE_BROKER_CONFIG: update_config,
}
