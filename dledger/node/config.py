"""`NodeConfig`: one node's settings, from keyword arguments, CLI flags or a RocketMQ-style properties file.

This is the one place where DLedger / RocketMQ key names (`dLegerGroup`, `flushDiskType`, ...) meet our
Raft-paper names. Invariants of a constructed `NodeConfig` (checked in `__post_init__`, so no invalid
config exists): every node id is a non-empty token without `-` or `;` (the peers string uses them as
separators); the group is a non-empty token that may also hold `-` (RocketMQ users name it like their
`brokerName`, `broker-a`); every address is `host:port` with 1 <= port <= 65535; ids and addresses are
unique; `self_id` and `preferred_leader` (if set) are peers; numbers are in range; `heartbeat_ms` is below
`election_timeout_ms`; peer authentication resolves to one mode (`peer_auth_mode`), and a group whose peers
are not all on loopback never runs without it unless `peer_auth="none"` says so. A bad value raises
`ConfigError` naming the key (or flag) and the value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dledger.net.addresses import ConfigError, check_token, format_peers, parse_address, parse_peers
from dledger.net.tls import TlsConfig
from dledger.node.config_keys import classify_unknown_keys
from dledger.node.properties import load_properties

__all__ = [
    "PROPERTY_KEYS",
    "ConfigError",
    "NodeConfig",
    "check_member",
    "format_peers",
    "load_properties",
    "parse_address",
    "parse_peers",
    "read_peer_secret",
]

log = logging.getLogger(__name__)

FlushMode = Literal["sync", "async"]
PeerAuthChoice = Literal["auto", "secret", "tls", "none"]
PeerTransportChoice = Literal["grpc", "tcp"]
MIN_PEER_SECRET_BYTES = 16  # dledger.net.handshake.MIN_SECRET_BYTES

_GROUP = re.compile(r"^[A-Za-z0-9_.-]+$")  # a group name is never split, so '-' is allowed
_MiB = 1 << 20


def _peers_arg(value: object) -> dict[str, str]:
    """`NodeConfig(peers=...)`: a mapping id -> host:port, or the `dLegerPeers` string (as `DLedgerClient`
    takes it)."""
    if isinstance(value, str):
        return parse_peers(value, key="peers")
    if not isinstance(value, Mapping):
        raise ConfigError(f"peers: {value!r} is neither a mapping of id -> host:port nor an ID-host:port;... string")
    for node_id, address in value.items():
        if not isinstance(node_id, str) or not isinstance(address, str):
            raise ConfigError(f"peers: {node_id!r}: {address!r} is not a text id and a text host:port")
    return dict(value)


def _check_group(value: str) -> None:
    if not isinstance(value, str) or not _GROUP.match(value):
        raise ConfigError(f"group: {value!r} must be letters, digits, '_', '.' or '-'")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Settings of one node. Times are milliseconds; sizes are bytes. `peers` may be given as a mapping or as
    the `dLegerPeers` string (`n0-host:port;n1-host:port`); it is always a dict once constructed."""

    self_id: str
    peers: Mapping[str, str]
    store_dir: pathlib.Path
    group: str = "default"
    flush: FlushMode = "async"
    flush_interval_ms: int = 200
    segment_bytes: int = 1 << 30
    drop_behind_bytes: int = 64 * _MiB  # the log's newest durable bytes left in the page cache (0: all)
    max_entry_bytes: int = 4 * _MiB
    file_reserved_hours: float = 72.0
    preferred_leader: str | None = None
    tick_ms: int = 20
    election_timeout_ms: int = 200  # T: a follower times out after [T, 2T)
    heartbeat_ms: int = 40
    rpc_timeout_ms: int = 1000
    max_message_bytes: int = 64 * _MiB
    pre_vote: bool = True
    check_quorum: bool = True
    lease_read: bool = False
    lazy_commit: bool = True  # followers learn the commit index from the next append or heartbeat
    metrics_port: int | None = None  # Prometheus /metrics on this port (0: any free port); None: off
    metrics_host: str = "127.0.0.1"
    tls_ca: pathlib.Path | None = None  # with tls_cert and tls_key: TLS everywhere, peers and clients need
    tls_cert: pathlib.Path | None = None  # a certificate signed by tls_ca (mutual TLS)
    tls_key: pathlib.Path | None = None
    # membership and snapshots
    join: bool = False  # a new member: `peers` are the running group plus this node; it waits to be added
    snapshot_entries: int = 1_000_000  # take a snapshot every this many applied entries (0: only on compact)
    snapshot_keep: int = 2  # snapshots kept on disk (the newest ones)
    snapshot_chunk_bytes: int = 1 * _MiB  # InstallSnapshot chunk size
    # peer authentication: "auto" is "secret" with a peer_secret, else "tls" with TLS, else "none" on loopback
    peer_auth: PeerAuthChoice = "auto"
    peer_secret: bytes | None = field(default=None, repr=False)  # the group's shared secret (>= 16 bytes)
    client_grants: pathlib.Path | None = None  # client API authorization (dledger.node.client_auth); None: off
    # how peers replicate: gRPC streams on `address`, or framed TCP on its port + peer_port_offset
    peer_transport: PeerTransportChoice = "grpc"
    peer_port_offset: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", _peers_arg(self.peers))
        object.__setattr__(self, "store_dir", pathlib.Path(self.store_dir))
        _check_group(self.group)
        check_token(self.self_id, key="self_id")
        if not self.peers:
            raise ConfigError("peers: no peers configured")
        addresses: set[str] = set()
        for node_id, address in self.peers.items():
            check_token(node_id, key="peers")
            parse_address(address, key=f"peers[{node_id}]")
            if address in addresses:
                raise ConfigError(f"peers: address {address!r} is used by two nodes")
            addresses.add(address)
        if self.self_id not in self.peers:
            raise ConfigError(f"self_id: {self.self_id!r} is not one of the peers {sorted(self.peers)}")
        if self.preferred_leader is not None and self.preferred_leader not in self.peers:
            raise ConfigError(f"preferred_leader: {self.preferred_leader!r} is not one of the peers")
        if self.flush not in ("sync", "async"):
            raise ConfigError(f"flush: {self.flush!r} must be 'sync' or 'async'")
        _check_range("flush_interval_ms", self.flush_interval_ms, 1, 60_000)
        _check_range("segment_bytes", self.segment_bytes, 4096, 1 << 40)
        _check_range("drop_behind_bytes", self.drop_behind_bytes, 0, 1 << 50)
        _check_range("max_entry_bytes", self.max_entry_bytes, 1, 1 << 30)
        _check_range("file_reserved_hours", self.file_reserved_hours, 0.0, 1e6, exclusive_low=True)
        _check_range("tick_ms", self.tick_ms, 1, 10_000)
        _check_range("election_timeout_ms", self.election_timeout_ms, self.tick_ms, 600_000)
        _check_range("heartbeat_ms", self.heartbeat_ms, self.tick_ms, self.election_timeout_ms - 1)
        _check_range("rpc_timeout_ms", self.rpc_timeout_ms, 1, 600_000)
        _check_range("max_message_bytes", self.max_message_bytes, self.max_entry_bytes + 4096, 1 << 31)
        if self.metrics_port is not None:
            _check_range("metrics_port", self.metrics_port, 0, 65535)
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(t is not None for t in tls) and any(t is None for t in tls):
            raise ConfigError("tls: give tls_ca, tls_cert and tls_key together (dledgerTlsCa/Cert/Key)")
        if self.lease_read and not self.check_quorum:
            raise ConfigError("lease_read: a lease read requires check_quorum")
        _check_range("snapshot_entries", self.snapshot_entries, 0, 1 << 62)
        _check_range("snapshot_keep", self.snapshot_keep, 1, 1000)
        _check_range("snapshot_chunk_bytes", self.snapshot_chunk_bytes, 4096, self.max_message_bytes - 4096)
        self.peer_auth_mode  # noqa: B018  # resolves, or raises ConfigError
        if self.peer_transport not in ("grpc", "tcp"):
            raise ConfigError(f"peer_transport: {self.peer_transport!r} must be grpc or tcp (dLegerPeerTransport)")
        _check_range("peer_port_offset", self.peer_port_offset, -65534, 65534)
        if self.peer_transport == "tcp":
            for node_id, address in self.peers.items():
                port = parse_address(address)[1] + self.peer_port_offset
                if not 1 <= port <= 65535:
                    raise ConfigError(
                        f"peer_port_offset: {node_id}'s peer port would be {port} ({address} + "
                        f"{self.peer_port_offset}), outside 1..65535 (dledgerPeerPortOffset)"
                    )

    @property
    def peer_auth_mode(self) -> Literal["secret", "tls", "none"]:
        """How peers authenticate (see dledger.node.peer_auth); ConfigError for a choice that cannot hold."""
        choice = self.peer_auth
        if choice not in ("auto", "secret", "tls", "none"):
            raise ConfigError(f"peer_auth: {choice!r} must be secret, tls or none (dLegerPeerAuth)")
        secret = self.peer_secret
        if secret is not None and len(secret) < MIN_PEER_SECRET_BYTES:
            raise ConfigError(
                f"peer_secret: the secret has {len(secret)} bytes; it needs at least {MIN_PEER_SECRET_BYTES}"
            )
        if choice == "secret" and secret is None:
            raise ConfigError(
                "peer_auth: secret needs a secret (dLegerPeerSecret, dLegerPeerSecretFile or --peer-secret-file)"
            )
        if choice == "tls" and self.tls_ca is None:
            raise ConfigError("peer_auth: tls needs TLS (dledgerTlsCa/Cert/Key) with node certificates")
        if choice != "auto":
            return choice
        if secret is not None:
            return "secret"
        if self.tls_ca is not None:
            return "tls"
        remote = sorted(a for a in self.peers.values() if not _is_loopback(a))
        if remote:
            raise ConfigError(
                f"peers {', '.join(remote)} are not on loopback, and peers do not authenticate: give the group a "
                "secret (dLegerPeerSecret / --peer-secret-file), TLS with node certificates, or say "
                "dLegerPeerAuth=none (--peer-auth none) to let anyone who reaches the port speak as a peer"
            )
        return "none"

    @property
    def address(self) -> str:
        """This node's own listen address."""
        return self.peers[self.self_id]

    @property
    def tls(self) -> TlsConfig | None:
        """The node's TLS settings (mutual TLS), or None for plaintext."""
        if self.tls_ca is None:
            return None
        return TlsConfig(ca=pathlib.Path(self.tls_ca), cert=_opt_path(self.tls_cert), key=_opt_path(self.tls_key))

    @property
    def election_tick(self) -> int:
        return max(2, self.election_timeout_ms // self.tick_ms)

    @property
    def heartbeat_tick(self) -> int:
        return max(1, self.heartbeat_ms // self.tick_ms)

    def replace(self, **changes: Any) -> NodeConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_properties(
        cls,
        properties: Mapping[str, str],
        *,
        overrides: Mapping[str, Any] | None = None,
        other_keys: Iterable[str] = (),
    ) -> NodeConfig:
        """Build from RocketMQ-style keys (see `PROPERTY_KEYS`); `overrides` (field names) win over the file.

        Keys that neither this loader nor `other_keys` (keys another layer, such as the broker, reads)
        know are never silently dropped: RocketMQ broker keys we do not use are accepted, a near miss of a
        known key is a `ConfigError`, the rest are logged on one warning line (see `config_keys`).
        """
        _check_unknown_keys(properties, [*PROPERTY_KEYS, *other_keys])
        values: dict[str, Any] = {}
        for key, (field_name, convert) in PROPERTY_KEYS.items():
            if key in properties:
                values[field_name] = convert(key, properties[key])
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        missing = [name for name in ("self_id", "peers", "store_dir") if name not in values]
        if missing:
            names = {field_name: key for key, (field_name, _) in PROPERTY_KEYS.items()}
            raise ConfigError("missing required settings: " + ", ".join(f"{names[m]} ({m})" for m in missing))
        try:
            return cls(**values)
        except TypeError as exc:  # an override with a wrong name
            raise ConfigError(str(exc)) from None

    @classmethod
    def from_file(
        cls, path: str | pathlib.Path, *, overrides: Mapping[str, Any] | None = None, other_keys: Iterable[str] = ()
    ) -> NodeConfig:
        return cls.from_properties(load_properties(path), overrides=overrides, other_keys=other_keys)


def check_member(node_id: str, address: str) -> None:
    """A membership change's node id (the peers-string token) and address (`host:port`, when given);
    ValueError (a ConfigError) naming what is wrong."""
    check_token(node_id, key="node id")
    if address:
        parse_address(address, key="address")


def _is_loopback(address: str) -> bool:
    host, _ = parse_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_peer_secret(path: str | pathlib.Path, *, key: str = "--peer-secret-file") -> bytes:
    """The secret in a file (surrounding white space stripped); ConfigError naming the file otherwise."""
    try:
        raw = pathlib.Path(path).expanduser().read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if len(raw) < MIN_PEER_SECRET_BYTES:
        raise ConfigError(
            f"{key}: {str(path)!r} holds {len(raw)} bytes; a peer secret needs at least {MIN_PEER_SECRET_BYTES}"
        )
    return raw


def _check_unknown_keys(properties: Iterable[str], known: Iterable[str]) -> None:
    misspelled, rest = classify_unknown_keys(properties, known)
    if misspelled:
        named = "; ".join(f"{key!r} (did you mean {likely!r}?)" for key, likely in misspelled)
        raise ConfigError(f"unknown key {named}: a misspelled setting is refused, not ignored")
    if rest:
        log.warning("ignoring unknown configuration keys: %s", ", ".join(rest))


def _opt_path(value: pathlib.Path | str | None) -> pathlib.Path | None:
    return None if value is None else pathlib.Path(value)


def _check_range(key: str, value: float, low: float, high: float, *, exclusive_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: {value!r} is not a number")
    if (value <= low if exclusive_low else value < low) or value > high:
        bound = f"> {low}" if exclusive_low else f">= {low}"
        raise ConfigError(f"{key}: {value!r} is out of range ({bound} and <= {high})")


def _int(key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not an integer") from None


def _float(key: str, text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number") from None


def _bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ConfigError(f"{key}: {text!r} must be true or false")


def _flush(key: str, text: str) -> FlushMode:
    value = text.strip().upper()
    if value == "SYNC_FLUSH":
        return "sync"
    if value == "ASYNC_FLUSH":
        return "async"
    raise ConfigError(f"{key}: {text!r} must be SYNC_FLUSH or ASYNC_FLUSH")


def _text(key: str, text: str) -> str:
    value = text.strip()
    if not value:
        raise ConfigError(f"{key}: the value is empty")
    return value


def _path(key: str, text: str) -> pathlib.Path:
    return pathlib.Path(_text(key, text)).expanduser()


def _peers(key: str, text: str) -> dict[str, str]:
    return parse_peers(text, key=key)


def _peer_auth(key: str, text: str) -> str:
    value = text.strip().lower()
    if value not in ("secret", "tls", "none"):
        raise ConfigError(f"{key}: {text!r} must be secret, tls or none")
    return value


def _peer_transport(key: str, text: str) -> str:
    value = text.strip().lower()
    if value not in ("grpc", "tcp"):
        raise ConfigError(f"{key}: {text!r} must be grpc or tcp")
    return value


def _secret(key: str, text: str) -> bytes:
    raw = text.strip().encode()
    if len(raw) < MIN_PEER_SECRET_BYTES:
        raise ConfigError(f"{key}: the secret has {len(raw)} bytes; it needs at least {MIN_PEER_SECRET_BYTES}")
    return raw


def _secret_file(key: str, text: str) -> bytes:
    return read_peer_secret(_text(key, text), key=key)


Converter = Callable[[str, str], Any]

#: RocketMQ / DLedger property key -> (NodeConfig field, converter)
PROPERTY_KEYS: dict[str, tuple[str, Converter]] = {
    "dLegerGroup": ("group", _text),
    "dLegerPeers": ("peers", _peers),
    "dLegerSelfId": ("self_id", _text),
    "storePathRootDir": ("store_dir", _path),
    "flushDiskType": ("flush", _flush),
    "flushIntervalCommitLog": ("flush_interval_ms", _int),
    "fileReservedTime": ("file_reserved_hours", _float),
    "mappedFileSizeCommitLog": ("segment_bytes", _int),
    "dledgerDropBehindBytes": ("drop_behind_bytes", _int),
    "maxMessageSize": ("max_entry_bytes", _int),
    "preferredLeaderId": ("preferred_leader", _text),
    "dledgerTickMs": ("tick_ms", _int),
    "dledgerElectionTimeoutMs": ("election_timeout_ms", _int),
    "dledgerHeartbeatMs": ("heartbeat_ms", _int),
    "dledgerRpcTimeoutMs": ("rpc_timeout_ms", _int),
    "dledgerPreVote": ("pre_vote", _bool),
    "dledgerCheckQuorum": ("check_quorum", _bool),
    "dledgerLeaseRead": ("lease_read", _bool),
    "dledgerLazyCommit": ("lazy_commit", _bool),
    "dledgerMetricsPort": ("metrics_port", _int),
    "dledgerMetricsHost": ("metrics_host", _text),
    "dledgerTlsCa": ("tls_ca", _path),
    "dledgerTlsCert": ("tls_cert", _path),
    "dledgerTlsKey": ("tls_key", _path),
    "dledgerJoin": ("join", _bool),
    "snapshotThreshold": ("snapshot_entries", _int),  # DLedgerConfig's names
    "maxSnapshotReservedNum": ("snapshot_keep", _int),
    "dledgerSnapshotChunkBytes": ("snapshot_chunk_bytes", _int),
    "dLegerPeerAuth": ("peer_auth", _peer_auth),
    "dLegerPeerSecret": ("peer_secret", _secret),
    "dLegerPeerSecretFile": ("peer_secret", _secret_file),
    "dledgerClientGrantsFile": ("client_grants", _path),
    "dLegerPeerTransport": ("peer_transport", _peer_transport),
    "dledgerPeerPortOffset": ("peer_port_offset", _int),
}
