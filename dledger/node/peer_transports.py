"""The node's peer transport seam: the `Transport` interface and the choice between its implementations.

`dLegerPeerTransport` (`NodeConfig.peer_transport`, CLI `--peer-transport`) picks one:
- `grpc` (the default): `transport.PeerTransport`, streams of the gRPC peer service on the node's address;
- `tcp`: `tcp_transport.TcpPeerTransport`, framed TCP on the port `dledgerPeerPortOffset` above the node's
  address (`tcp_peer`), served by `tcp_listener.TcpPeerListener`; snapshot chunks still go over gRPC.

Every node of a group must run the same transport (a gRPC node does not listen for peer frames).
Tests pass `DLedgerServer` a `transport_factory` instead (`dledger.testing.memory_transport`: no sockets).
Invariant: both implementations take the same messages and keep the same promises (see `Transport`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from dledger._proto import dledger_pb2 as pb
from dledger.node.config import NodeConfig
from dledger.node.peer_auth import peer_sessions
from dledger.node.peer_links import Outgoing
from dledger.node.tcp_listener import TcpPeerListener
from dledger.node.tcp_peer import client_ssl_context, server_ssl_context
from dledger.node.tcp_transport import TcpPeerTransport
from dledger.node.transport import PeerTransport

__all__ = ["Transport", "make_listener", "make_transport", "silence_timeout"]



class Transport(Protocol):
    """What the node needs of its peer transport. `send` never blocks and may drop (Raft tolerates lost,
    duplicated and reordered messages); each peer's messages of one kind (appends with entries, the rest)
    arrive in the order sent, or not at all."""

    stats: Counter[str]

    def start(self) -> None: ...

    def set_peers(self, peers: Mapping[str, str]) -> None: ...

    def send(self, to_id: str, messages: Sequence[Outgoing]) -> None: ...

    async def send_snapshot_chunk(self, to_id: str, chunk: pb.SnapshotChunk, timeout: float) -> pb.SnapshotAck: ...

    def connected(self, to_id: str) -> bool: ...

    async def close(self) -> None: ...


def silence_timeout(config: NodeConfig) -> float:
    """How long a TCP lane waits for any answer after writing before it redials: twice the election timeout,
    at least a second. A redial drops what was in flight, and a healthy follower's loop can be held that
    long by a write the kernel throttles (dirty page writeback) or a starved CPU; gRPC's keepalive took
    two seconds to give up on a peer."""
    return max(2 * config.election_timeout_ms / 1000, 1.0)


def _grpc(config: NodeConfig) -> PeerTransport:
    tls = config.tls
    return PeerTransport(
        config.self_id,
        config.peers,
        max_message_bytes=config.max_message_bytes,
        credentials=tls.channel_credentials() if tls is not None else None,
        session=peer_sessions(config),
    )


def make_transport(config: NodeConfig) -> Transport:
    """The transport `config.peer_transport` names, not yet started."""
    snapshots = _grpc(config)
    if config.peer_transport == "grpc":
        return snapshots
    tls = config.tls
    return TcpPeerTransport(
        config.group,
        config.self_id,
        config.peers,
        snapshots,
        mode=config.peer_auth_mode,
        secret=config.peer_secret,
        max_message_bytes=config.max_message_bytes,
        port_offset=config.peer_port_offset,
        silence_timeout=silence_timeout(config),
        handshake_timeout=max(1.0, 2 * silence_timeout(config)),
        ssl_context=client_ssl_context(tls) if tls is not None else None,
    )


def make_listener(
    config: NodeConfig,
    check: Callable[[pb.PeerBatch, str | None], str | None],
    on_messages: Callable[[Sequence[pb.PeerMessage]], None],
) -> TcpPeerListener:
    """The TCP peer listener of a node on the `tcp` transport (not yet listening)."""
    tls = config.tls
    return TcpPeerListener(
        config.group,
        config.self_id,
        config.peer_auth_mode,
        check,
        on_messages,
        max_message_bytes=config.max_message_bytes,
        secret=config.peer_secret,
        ssl_context=server_ssl_context(tls) if tls is not None else None,
        ack_delay=min(config.election_timeout_ms / 4000, silence_timeout(config) / 8),
    )
