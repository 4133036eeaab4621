"""`RemotingConfig`: the settings of the broker's remoting face, with RocketMQ's broker.conf names.

Keys: `listenPort` (10911), `brokerIP1` (the address clients reach this replica at, and the store host in
message ids; default 127.0.0.1), `brokerName`, `brokerClusterName`, `messageDelayLevel` (the delay of each
level, "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h" by default), `maxReconsumeTimes` (16:
used when a consumer does not say its own), `remotingLongPollMaxMs` (the longest a pull is suspended),
`transactionTimeOut` (6000 ms: a half message older than this is checked with its producer group) and
`transactionCheckInterval` (60000 ms between checks of one message), `accessKey` / `secretKey` (when set,
every request must carry RocketMQ's ACL 1.0 signature with them: one admin account), `aclFile` (accounts
with per-topic and per-group permissions, see `access.py`; with it too every request must be signed),
`remotingPeers` (every replica's remoting
address, `n0-host:port;n1-host:port;...` in the `dLegerPeers` format: where a follower forwards writes;
without it each replica's is its `dLegerPeers` host with this file's `listenPort`, when the hosts differ).

Invariant: `from_properties` raises `ConfigError` (one line naming the key) on a bad value, never another
exception; a config it returns has a port in 0..65535 and at least one delay level.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from dledger.net.addresses import parse_peers
from dledger.node.config import ConfigError
from dledger.rocketmq.broker.access import AclTable
from dledger.rocketmq.broker.storemap import DEFAULT_DELAY_LEVELS, delay_levels

__all__ = ["REMOTING_KEYS", "RemotingConfig"]

REMOTING_KEYS = (
    "listenPort", "brokerIP1", "brokerName", "brokerClusterName", "messageDelayLevel", "maxReconsumeTimes",
    "remotingLongPollMaxMs", "transactionTimeOut", "transactionCheckInterval", "accessKey", "secretKey",
    "remotingPeers", "aclFile",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RemotingConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 10911
    broker_ip: str = "127.0.0.1"
    broker_name: str = "broker-a"
    cluster_name: str = "DefaultCluster"
    delay_levels_ms: tuple[int, ...] = field(default_factory=lambda: delay_levels(DEFAULT_DELAY_LEVELS))
    max_reconsume_times: int = 16
    long_poll_max_ms: int = 30_000
    tx_timeout_ms: int = 6_000  # a half message older than this is checked with its producer group
    tx_check_interval_ms: int = 60_000  # and checked again at most this often
    access_key: str = ""  # with secret_key: every request must carry RocketMQ's ACL 1.0 signature
    secret_key: str = ""
    acl_accounts: AclTable | None = None  # the accounts of `aclFile`
    # dLedger peer address -> that replica's remoting address (where a follower forwards writes)
    remoting_peers: Mapping[str, str] = field(default_factory=dict)

    @property
    def access(self) -> AclTable | None:
        """Who may do what (None: no access control): `aclFile`'s accounts and the `accessKey` admin."""
        single = AclTable.single(self.access_key, self.secret_key) if self.access_key else None
        if self.acl_accounts is None:
            return single
        return self.acl_accounts.merged(single) if single is not None else self.acl_accounts

    @property
    def address(self) -> str:
        """What clients connect to: `brokerIP1:listenPort`."""
        return f"{self.broker_ip}:{self.listen_port}"

    @classmethod
    def from_properties(cls, props: Mapping[str, str], **overrides: object) -> RemotingConfig:
        values: dict[str, object] = {}
        try:
            if "listenPort" in props:
                values["listen_port"] = _int_in(props, "listenPort", 0, 65535)
            if "brokerIP1" in props:
                ipaddress.ip_address(props["brokerIP1"].strip())
                values["broker_ip"] = props["brokerIP1"].strip()
            if "brokerName" in props:
                values["broker_name"] = props["brokerName"].strip()
            if "brokerClusterName" in props:
                values["cluster_name"] = props["brokerClusterName"].strip()
            if "messageDelayLevel" in props:
                values["delay_levels_ms"] = delay_levels(props["messageDelayLevel"])
            if "maxReconsumeTimes" in props:
                # any Java int, as RocketMQ reads it (the same key sets the gRPC face's delivery attempts)
                values["max_reconsume_times"] = _int_in(props, "maxReconsumeTimes", 0, 2**31 - 1)
            if "transactionTimeOut" in props:
                values["tx_timeout_ms"] = _int_in(props, "transactionTimeOut", 1, 86_400_000)
            if "transactionCheckInterval" in props:
                values["tx_check_interval_ms"] = _int_in(props, "transactionCheckInterval", 100, 86_400_000)
            values["access_key"] = props.get("accessKey", "").strip()
            values["secret_key"] = props.get("secretKey", "").strip()
            if bool(values["access_key"]) != bool(values["secret_key"]):
                raise ValueError("accessKey and secretKey: give both or neither")
            if props.get("aclFile", "").strip():
                values["acl_accounts"] = AclTable.load(os.path.expanduser(props["aclFile"].strip()))
            if "remotingLongPollMaxMs" in props:
                values["long_poll_max_ms"] = _int_in(props, "remotingLongPollMaxMs", 0, 3_600_000)
            port = values.get("listen_port", 10911)
            values["remoting_peers"] = _remoting_peers(props, port if isinstance(port, int) else 10911)
        except ValueError as exc:
            raise ConfigError(f"remoting settings: {exc}") from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _int_in(props: Mapping[str, str], key: str, lo: int, hi: int) -> int:
    text = props[key]
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{key}={text.strip()!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ValueError(f"{key}={value} is not in {lo}..{hi}")
    return value


def _remoting_peers(props: Mapping[str, str], listen_port: int) -> dict[str, str]:
    """dLedger peer address -> remoting address of each replica ({} when neither key says it)."""
    if not props.get("dLegerPeers", "").strip():
        return {}
    raft = parse_peers(props["dLegerPeers"])
    if props.get("remotingPeers", "").strip():
        given = parse_peers(props["remotingPeers"], key="remotingPeers")
        missing = sorted(set(raft) - set(given))
        if missing:
            raise ValueError(f"remotingPeers: no entry for replica {missing[0]!r} of dLegerPeers")
        return {raft[i]: given[i] for i in raft}
    hosts = {i: a.rpartition(":")[0] for i, a in raft.items()}
    if listen_port == 0 or len(set(hosts.values())) < len(hosts):  # shared hosts: other listenPorts unknown
        return {}
    return {raft[i]: f"{hosts[i]}:{listen_port}" for i in raft}
