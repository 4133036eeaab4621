"""An in-process peer transport: a group of nodes in one process exchanges Raft messages without sockets.

`MemoryHub` is the network; `hub.server(config, ...)` builds a `DLedgerServer` whose peer transport is a
`MemoryTransport` on the hub and which opens no socket: clients reach its client service through the hub
too (`dledger.testing.memory_client.MemoryStubs`), while the node runs (`grpc_endpoint=True` keeps the
gRPC client endpoint at `config.address` for tests of the gRPC path). A message sent
from A to B is copied through its wire form and handed to B's `PeerServicer` on B's event loop after the
checks the socket listeners apply (group, recipient, and the sender the hub knows it came from), so a
misrouted or forged message is refused exactly as on the network. Snapshot chunks go the same way, to B's
snapshot inbox.

Switches for fault tests: `cut(a, b)` drops everything between two nodes both ways (a partition),
`isolate(a)` cuts a from every other node, `heal(a, b)` / `heal_all()` undo it. Counters: `hub.stats`
per (from, to) and kind ("delivered", "dropped_cut", "dropped_down", "rejected"), and each transport's
`stats` as the socket transports keep theirs.

Invariants: every message from A to B is delivered at most once, in the order A sent it (one FIFO per
recipient loop, stricter than the per-lane order `Transport` promises); nothing crosses a cut link, at
send time or at delivery; `send` never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dledger._proto import dledger_pb2 as pb
from dledger.node.codec import Parts
from dledger.node.config import NodeConfig
from dledger.node.peer_links import Outgoing
from dledger.node.server import DLedgerServer
from dledger.node.services import ClientServicer
from dledger.node.state_machine import StateMachine
from dledger.node.transport import PeerServicer
from dledger.testing.memory_client import MemoryStubs

__all__ = ["MemoryHub", "MemoryTransport"]

log = logging.getLogger(__name__)


@dataclass
class _Inbound:
    """A running node's receiving side: its servicer, its event loop, the transport that registered it, its
    client service (None for a bare transport) and an event set once it leaves the hub."""

    servicer: PeerServicer
    loop: asyncio.AbstractEventLoop
    owner: MemoryTransport
    client: ClientServicer | None
    gone: asyncio.Event


def _copy(message: Outgoing) -> pb.PeerMessage:
    """The message as the recipient would parse it off the wire (never the sender's object)."""
    if isinstance(message, pb.PeerMessage):
        return pb.PeerMessage.FromString(message.SerializeToString())
    data = b"".join(message.parts) if isinstance(message, Parts) else message
    return pb.PeerMessage.FromString(data)


def _chunk_refusal(group: str, self_id: str, chunk: pb.SnapshotChunk, sender: str) -> str | None:
    """Why a snapshot chunk with this envelope must be refused by `self_id`, or None."""
    if chunk.group != group:
        return f"snapshot for group {chunk.group!r}, this is group {group!r}"
    if chunk.to_id != self_id:
        return f"snapshot for {chunk.to_id!r} reached {self_id!r}"
    if chunk.from_id != sender:
        return f"snapshot from {chunk.from_id!r} sent by {sender!r}"
    return None


class MemoryHub:
    """The in-process network between the nodes of one or more groups; see the module docstring."""

    def __init__(self) -> None:
        self.stats: Counter[tuple[str, str, str]] = Counter()
        self._inbound: dict[str, _Inbound] = {}
        self._cut: set[frozenset[str]] = set()

    # ---- building nodes ----
    def server(
        self,
        config: NodeConfig,
        state_machines: Sequence[StateMachine] = (),
        *,
        seed: int | None = None,
        grpc_endpoint: bool = False,
    ) -> DLedgerServer:
        """A `DLedgerServer` whose peers and clients reach it through this hub (not yet started)."""
        if config.peer_transport != "grpc":
            raise ValueError(f"a node on the memory hub runs no {config.peer_transport!r} peer listener")
        holder: list[DLedgerServer] = []

        def make(cfg: NodeConfig) -> MemoryTransport:
            return MemoryTransport(self, cfg, holder[0].peer_servicer, holder[0].client_servicer)

        server = DLedgerServer(
            config,
            state_machines,
            seed=seed,
            transport_factory=make,
            grpc_endpoint=grpc_endpoint,
            group_stubs=MemoryStubs(self),
        )
        holder.append(server)
        return server

    # ---- partitions ----
    def cut(self, a: str, b: str) -> None:
        """Drop every message and snapshot chunk between `a` and `b`, both ways, until healed."""
        self._cut.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self._cut.discard(frozenset((a, b)))

    def isolate(self, node_id: str, others: Sequence[str]) -> None:
        """Cut `node_id` from each of `others`."""
        for other in others:
            if other != node_id:
                self.cut(node_id, other)

    def heal_all(self) -> None:
        self._cut.clear()

    def linked(self, a: str, b: str) -> bool:
        """True when `a` can reach `b`: `b` runs on the hub and the link is not cut."""
        return b in self._inbound and frozenset((a, b)) not in self._cut

    # ---- the clients' side ----
    def client_endpoint(self, node_id: str) -> tuple[ClientServicer, asyncio.Event] | None:
        """The client service of `node_id` while it runs on the hub, and the event set when it stops. Called
        on the node's event loop (RuntimeError otherwise: its service is not thread-safe)."""
        inbound = self._inbound.get(node_id)
        if inbound is None or inbound.client is None:
            return None
        if inbound.loop is not asyncio.get_running_loop():
            raise RuntimeError(f"{node_id} runs on another event loop than its in-process client")
        return inbound.client, inbound.gone

    # ---- the transports' side ----
    def _attach(self, node_id: str, inbound: _Inbound) -> None:
        previous = self._inbound.get(node_id)
        if previous is not None:
            previous.gone.set()
        self._inbound[node_id] = inbound

    def _detach(self, node_id: str, owner: MemoryTransport) -> None:
        current = self._inbound.get(node_id)
        if current is not None and current.owner is owner:
            del self._inbound[node_id]
            current.gone.set()

    def _post(self, from_id: str, to_id: str, messages: list[pb.PeerMessage]) -> int:
        """Queue `messages` for `to_id`'s loop; returns how many were queued (0 when cut or down)."""
        if frozenset((from_id, to_id)) in self._cut:
            self.stats[from_id, to_id, "dropped_cut"] += len(messages)
            return 0
        inbound = self._inbound.get(to_id)
        if inbound is None:
            self.stats[from_id, to_id, "dropped_down"] += len(messages)
            return 0
        try:
            inbound.loop.call_soon_threadsafe(self._deliver, from_id, to_id, inbound, messages)
        except RuntimeError:  # the recipient's loop has closed
            self.stats[from_id, to_id, "dropped_down"] += len(messages)
            return 0
        return len(messages)

    def _deliver(self, from_id: str, to_id: str, inbound: _Inbound, messages: list[pb.PeerMessage]) -> None:
        """On the recipient's loop: the listener's checks, then the node's inbound path."""
        if self._inbound.get(to_id) is not inbound:
            self.stats[from_id, to_id, "dropped_down"] += len(messages)
            return
        if frozenset((from_id, to_id)) in self._cut:
            self.stats[from_id, to_id, "dropped_cut"] += len(messages)
            return
        batch = pb.PeerBatch(messages=messages)
        reason = inbound.servicer.check(batch, from_id)
        if reason is not None:
            self.stats[from_id, to_id, "rejected"] += len(messages)
            inbound.servicer.rejected[reason.split(" ", 1)[0]] += 1
            log.warning("%s refused a peer batch from %s: %s", to_id, from_id, reason)
            return
        self.stats[from_id, to_id, "delivered"] += len(messages)
        inbound.servicer.on_messages(batch.messages)

    async def _send_chunk(self, from_id: str, to_id: str, chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
        if not self.linked(from_id, to_id):
            self.stats[from_id, to_id, "dropped_cut" if to_id in self._inbound else "dropped_down"] += 1
            raise ConnectionError(f"{to_id!r} is unreachable from {from_id!r}")
        inbound = self._inbound[to_id]
        copy = pb.SnapshotChunk.FromString(chunk.SerializeToString())
        future = asyncio.run_coroutine_threadsafe(self._receive_chunk(from_id, to_id, inbound, copy), inbound.loop)
        return await asyncio.wrap_future(future)

    async def _receive_chunk(
        self, from_id: str, to_id: str, inbound: _Inbound, chunk: pb.SnapshotChunk
    ) -> pb.SnapshotAck:
        servicer = inbound.servicer
        reason = _chunk_refusal(servicer.group, servicer.self_id, chunk, from_id)
        if reason is not None:
            self.stats[from_id, to_id, "rejected"] += 1
            servicer.rejected[reason.split(" ", 1)[0]] += 1
            raise PermissionError(reason)
        if servicer.on_snapshot_chunk is None:
            return pb.SnapshotAck(ok=False, error="this node does not take snapshots")
        self.stats[from_id, to_id, "delivered_chunks"] += 1
        return await servicer.on_snapshot_chunk(chunk)


class MemoryTransport:
    """One node's `Transport` on a `MemoryHub` (built by `MemoryHub.server`)."""

    def __init__(
        self, hub: MemoryHub, config: NodeConfig, servicer: PeerServicer, client: ClientServicer | None = None
    ) -> None:
        self.hub = hub
        self.self_id = config.self_id
        self.stats: Counter[str] = Counter()
        self._servicer = servicer
        self._client = client
        self._peers: set[str] = set()
        self.set_peers(config.peers)

    def start(self) -> None:
        """Start receiving: the hub delivers this node's messages on the running loop from now on."""
        inbound = _Inbound(self._servicer, asyncio.get_running_loop(), self, self._client, asyncio.Event())
        self.hub._attach(self.self_id, inbound)

    def set_peers(self, peers: Mapping[str, str]) -> None:
        self._peers = {node_id for node_id, address in peers.items() if node_id != self.self_id and address}

    def send(self, to_id: str, messages: Sequence[Outgoing]) -> None:
        if to_id not in self._peers:
            self.stats["dropped_unknown_peer"] += len(messages)
            return
        sent = self.hub._post(self.self_id, to_id, [_copy(m) for m in messages])
        self.stats["sent"] += sent
        self.stats["dropped"] += len(messages) - sent

    async def send_snapshot_chunk(self, to_id: str, chunk: pb.SnapshotChunk, timeout: float) -> pb.SnapshotAck:
        """One chunk, to the recipient's snapshot inbox (raises when the peer is unreachable or refuses)."""
        if to_id not in self._peers:
            raise LookupError(f"{to_id!r} is not a peer")
        return await asyncio.wait_for(self.hub._send_chunk(self.self_id, to_id, chunk), timeout)

    def connected(self, to_id: str) -> bool:
        return to_id in self._peers and self.hub.linked(self.self_id, to_id)

    async def close(self) -> None:
        self.hub._detach(self.self_id, self)
