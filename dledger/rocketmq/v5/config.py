"""`EndpointConfig`: the settings of a replica's RocketMQ 5 gRPC endpoint, from broker.conf keys.

Keys (RocketMQ proxy names where one exists):
- `grpcServerPort` (default 8081): this replica's `MessagingService` port;
- `grpcEndpoints`: every replica's endpoint, `n0-host:port;n1-host:port;...` (the `dLegerPeers` format).
  Without it, each replica's endpoint is its dLedger peer host with this file's `grpcServerPort` (one
  replica per machine; replicas that share a host are refused at start: the map would be ambiguous).
  A follower forwards writes to the leader's entry, and QueryRoute advertises them all;
- `brokerName` (default: the dLedger group): the one broker the group appears as;
- `accessKey` / `secretKey`: when set, every request must carry the client's MQv2-HMAC-SHA1 signature;
- `defaultInvisibleTimeMills` (default 60000): the invisible time of an auto-renew (push consumer) receive;
- `transactionTimeOut` (default 6000) and `transactionCheckInterval` (default 30000), milliseconds: a
  prepared transactional message older than the timeout is checked with its producer every interval.
Invariant: the map always has an entry for this replica, and addresses are `host:port`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dledger.node.config import ConfigError, NodeConfig, parse_address, parse_peers

__all__ = ["ENDPOINT_KEYS", "EndpointConfig"]

ENDPOINT_KEYS = (
    "grpcServerPort",
    "grpcEndpoints",
    "brokerName",
    "accessKey",
    "secretKey",
    "defaultInvisibleTimeMills",
    "transactionTimeOut",
    "transactionCheckInterval",
)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    self_id: str
    endpoints: Mapping[str, str]  # node id -> host:port of its MessagingService
    broker_name: str
    access_key: str = ""
    secret_key: str = ""
    default_invisible_ms: int = 60_000
    tx_timeout_ms: int = 6_000
    tx_check_interval_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.self_id not in self.endpoints:
            raise ConfigError(f"grpcEndpoints: no entry for this replica {self.self_id!r}")
        for address in self.endpoints.values():
            parse_address(address, key="grpcEndpoints")
        if bool(self.access_key) != bool(self.secret_key):
            raise ConfigError("accessKey and secretKey: give both or neither")
        for name in ("default_invisible_ms", "tx_timeout_ms", "tx_check_interval_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive")

    @property
    def address(self) -> str:
        return self.endpoints[self.self_id]

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    @classmethod
    def from_properties(cls, props: Mapping[str, str], node: NodeConfig) -> EndpointConfig:
        def num(key: str, default: int) -> int:
            text = props.get(key, "").strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"{key}: {text!r} is not an integer") from None

        port = num("grpcServerPort", 8081)
        if not 1 <= port <= 65535:
            raise ConfigError(f"grpcServerPort: {port} is not in 1..65535")
        if props.get("grpcEndpoints", "").strip():
            endpoints = parse_peers(props["grpcEndpoints"], key="grpcEndpoints")
            if parse_address(endpoints.get(node.self_id, "x:1"), key="grpcEndpoints")[1] != port and (
                "grpcServerPort" in props
            ):
                raise ConfigError("grpcServerPort disagrees with this replica's entry in grpcEndpoints")
        else:
            _refuse_shared_hosts(node.peers)
            endpoints = {i: f"{parse_address(a)[0]}:{port}" for i, a in node.peers.items()}
        return cls(
            self_id=node.self_id,
            endpoints=endpoints,
            broker_name=props.get("brokerName", "").strip() or node.group,
            access_key=props.get("accessKey", "").strip(),
            secret_key=props.get("secretKey", "").strip(),
            default_invisible_ms=num("defaultInvisibleTimeMills", 60_000),
            tx_timeout_ms=num("transactionTimeOut", 6_000),
            tx_check_interval_ms=num("transactionCheckInterval", 30_000),
        )


def _refuse_shared_hosts(peers: Mapping[str, str]) -> None:
    """Without `grpcEndpoints` each replica's endpoint is its peer host with this file's `grpcServerPort`;
    two replicas on one host cannot both listen there, so a follower would forward writes to a replica that
    is not the master. Refuse such a group at start, naming the replicas."""
    by_host: dict[str, list[str]] = {}
    for node_id, address in peers.items():
        by_host.setdefault(parse_address(address)[0], []).append(node_id)
    shared = [(host, ids) for host, ids in by_host.items() if len(ids) > 1]
    if shared:
        host, ids = shared[0]
        raise ConfigError(
            f"grpcEndpoints: replicas {', '.join(ids)} share the host {host}, so their endpoints cannot be "
            "derived from grpcServerPort; give every replica's endpoint: grpcEndpoints=n0-host:port;n1-host:port;..."
        )
