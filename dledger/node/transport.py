"""Peer transport on grpc.aio: one long-lived client stream from this node to each peer, carrying batches.

Each direction has its own stream (a follower's responses travel on its own stream to the leader), as in
etcd's rafthttp. Raft tolerates lost, duplicated and reordered messages, so the transport is lossy by design:
- `send(to, messages)` never blocks; towards each peer, appends that carry entries and everything else
  (heartbeats, votes, answers) travel on two streams, so a follower's heartbeats never wait behind megabytes
  of entries; each stream's outbox is bounded (`max_pending`) and drops what does not fit, counting it;
  while a peer is unreachable an outbox keeps only the newest messages;
- a stream is opened only when there is something to send, and a broken one is reopened after a short
  backoff capped at `RETRY_MAX` (100 ms): a peer that comes back (a restarted node) must hear from us
  within a heartbeat or two, or an election that needs its vote waits for our backoff (a longer cap
  would add that wait to every failover); keepalive pings find a dead or paused peer;
- messages travel serialized (`codec.to_wire_parts`): a batch is their framing (`codec.frame_batch`), sent
  with a pass-through serializer, so nothing is copied into a protobuf batch and serialized again per peer;
  a batch never exceeds `max_message_bytes` (what the peer accepts): a longer outbox goes as several
  batches, in order (one message alone may still be too large: the peer refuses it, the stream breaks);
- every call is authenticated first (`peer_auth.PeerGate`: a handshake session or a node certificate, unless
  the node runs with peer authentication off): an unauthenticated call ends with UNAUTHENTICATED before any
  message is read, and the dialling link handshakes again;
- every received message is checked before it reaches the node: its group must be ours, its sender not
  us and the node the call was authenticated as, its recipient us, and it must not be a bare InstallSnapshot
  (a snapshot reaches the node only through the chunk transfer, which checks and stores it first). A batch
  that fails the check ends the stream with PERMISSION_DENIED and changes nothing; gRPC enforces the maximum
  message size. The sender need not be in this node's configuration: a leader whose configuration is newer
  (it added members this node has not heard of yet) must still reach it, or the node never learns the
  change; the core decides which messages from non-members to take (appends, snapshots, TimeoutNow).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.net.handshake import HandshakeError
from dledger.node.codec import Parts, frame_batch, wire_size
from dledger.node.peer_auth import PeerAuthError, PeerGate, PeerSession, StaleSessionError
from dledger.node.peer_links import LinkTable, Outgoing, admit, split_lanes

__all__ = ["PeerServicer", "PeerTransport", "channel_options", "server_options"]

log = logging.getLogger(__name__)

OnMessages = Callable[[Sequence[pb.PeerMessage]], None]
_FRAMING = 6  # bytes a batch adds per message at most: the field tag and a 5-byte length (messages < 4 GiB)
STREAM_METHOD = "/dledger.v1.RaftPeer/Stream"
OnSnapshotChunk = Callable[[pb.SnapshotChunk], Awaitable[pb.SnapshotAck]]
RETRY_MIN = 0.01  # seconds before the first reconnect after a stream broke
HANDSHAKE_DEADLINE = 5.0  # seconds a peer handshake may take
RETRY_MAX = 0.1  # the cap: about two heartbeats at the default timing; connects to loopback or LAN are cheap


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 100),  # see RETRY_MAX
        ("grpc.enable_retries", 0),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]


def _as_is(data: bytes) -> bytes:
    return data


class PeerServicer(pb_grpc.RaftPeerServicer):  # type: ignore[misc]  # generated base is untyped
    """Receives peer batches, checks them, and hands the messages to `on_messages` (never blocks)."""

    def __init__(
        self,
        group: str,
        self_id: str,
        on_messages: OnMessages,
        on_snapshot_chunk: OnSnapshotChunk | None = None,
        gate: PeerGate | None = None,
    ) -> None:
        """`gate`: who may speak (see peer_auth); None: nobody is authenticated (peer authentication off)."""
        self.group = group
        self.self_id = self_id
        self.on_messages = on_messages
        self.on_snapshot_chunk = on_snapshot_chunk
        self.gate = gate if gate is not None else PeerGate("none", group, self_id)
        self.rejected: Counter[str] = Counter()

    def _misrouted(self, what: str, group: str, from_id: str, to_id: str, sender: str | None) -> str | None:
        """Why a message or snapshot chunk (`what`) with this envelope must be refused, or None. `sender`:
        the node the call was authenticated as (None: authentication is off)."""
        if group != self.group:
            return f"{what} for group {group!r}, this is group {self.group!r}"
        if from_id == self.self_id:  # not "outside the configuration": see the module docstring
            return f"{what} from {self.self_id!r} to itself"
        if to_id != self.self_id:
            return f"{what} for {to_id!r} reached {self.self_id!r}"
        if sender is not None and from_id != sender:
            return f"{what} from {from_id!r} on a call authenticated as {sender!r}"
        return None

    def check(self, batch: pb.PeerBatch, sender: str | None = None) -> str | None:
        """Why this batch must be refused, or None when every message in it is acceptable."""
        for msg in batch.messages:
            reason = self._misrouted("message", msg.group, msg.from_id, msg.to_id, sender)
            if reason is not None:
                return reason
            body = msg.WhichOneof("body")
            if body is None:
                return "message without a body"
            if body == "install_snapshot":
                return "a bare InstallSnapshot (a snapshot arrives as chunks, checked before it is installed)"
        return None

    def _refuse(self, reason: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.rejected[reason.split(" ", 1)[0]] += 1
        self.gate.note_refusal("a peer call", reason, context.peer())

    async def _identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        try:
            return self.gate.identify(context)
        except PeerAuthError as exc:
            self.rejected["unauthenticated"] += 1
            level = logging.INFO if isinstance(exc, StaleSessionError) else logging.WARNING
            self.gate.note_refusal("an unauthenticated peer call", str(exc), context.peer(), level)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise  # not reached: abort raises

    async def _accept(
        self, batch: pb.PeerBatch, sender: str | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        reason = self.check(batch, sender)
        if reason is not None:
            self._refuse(reason, context)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        if batch.messages:
            self.on_messages(batch.messages)

    async def Stream(
        self, request_iterator: AsyncIterator[pb.PeerBatch], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PeerAck:
        sender = await self._identify(context)
        async for batch in request_iterator:
            await self._accept(batch, sender, context)
        return pb.PeerAck(group=self.group, node_id=self.self_id)

    async def Send(self, request: pb.PeerBatch, context: grpc.aio.ServicerContext[Any, Any]) -> pb.PeerAck:
        await self._accept(request, await self._identify(context), context)
        return pb.PeerAck(group=self.group, node_id=self.self_id)

    async def SendSnapshotChunk(
        self, request: pb.SnapshotChunk, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SnapshotAck:
        sender = await self._identify(context)
        reason = self._misrouted("snapshot", request.group, request.from_id, request.to_id, sender)
        if reason is not None:
            self._refuse(reason, context)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        if self.on_snapshot_chunk is None:
            return pb.SnapshotAck(ok=False, error="this node does not take snapshots")
        return await self.on_snapshot_chunk(request)


class _Lane:
    """One stream towards a peer: a bounded outbox and the task that streams it, redialling when it breaks."""

    def __init__(self, link: _PeerLink, name: str) -> None:
        self.link = link
        self.name = name
        self.outbox: deque[bytes | Parts] = deque()
        self.wakeup = asyncio.Event()
        self.connected = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"peer-{self.name}-{self.link.address}")

    def push(self, messages: Sequence[bytes | Parts]) -> None:
        admit(
            self.outbox, messages, max_pending=self.link.max_pending, connected=self.connected, stats=self.link.stats
        )
        self.wakeup.set()

    async def _batches(self) -> AsyncIterator[bytes]:
        while True:
            while not self.outbox:
                self.wakeup.clear()
                await self.wakeup.wait()
            yield self._next_batch()
            self.connected = True
            self.link.stats["batches_sent"] += 1

    def _next_batch(self) -> bytes:
        """The framing of the outbox's oldest messages, as many as fit in `max_batch_bytes` (at least one)."""
        outbox = self.outbox
        limit = self.link.max_batch_bytes
        taken: list[bytes | Parts] = []
        size = 0
        while outbox:
            n = wire_size(outbox[0]) + _FRAMING
            if taken and size + n > limit:
                self.link.stats["batches_split"] += 1
                break
            taken.append(outbox.popleft())
            size += n
        return frame_batch(taken)

    async def _run(self) -> None:
        link, stats = self.link, self.link.stats
        delay = RETRY_MIN
        while True:
            while not self.outbox:  # an idle lane does not dial: nothing to say, nothing to retry
                self.wakeup.clear()
                await self.wakeup.wait()
            try:
                await link._stream(self._batches(), metadata=await link.call_metadata())
            except asyncio.CancelledError:
                raise
            except HandshakeError:  # logged by the session, once per reason
                stats["handshake_refused"] += 1
            except grpc.aio.AioRpcError as exc:
                if self.connected:
                    log.info("%s stream to %s broke: %s", self.name, link.address, exc.code())
                stats[f"stream_error_{exc.code().name.lower()}"] += 1
                if link.session is not None:  # bound to its connection: a broken stream most likely lost it
                    link.session.forget()
                elif exc.code() == grpc.StatusCode.UNAUTHENTICATED and not link.told_unauthenticated:
                    link.told_unauthenticated = True  # once per link: it retries every 100 ms
                    log.error(
                        "%s wants peers to authenticate (%s): give this node the group's peer secret "
                        "(--peer-secret-file) or its node certificate",
                        link.address,
                        exc.details(),
                    )
            except Exception:  # a bug must not kill the lane silently
                log.exception("%s stream to %s failed", self.name, link.address)
            if self.connected:
                delay = RETRY_MIN
            self.connected = False
            await link._sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class _PeerLink:
    """The outgoing side towards one peer: one channel, two lanes. Appends that carry entries travel on the
    `bulk` lane; everything else (heartbeats, votes, answers, TimeoutNow) on the `control` lane, so that
    megabytes of entries queued for a slow follower never hold up the heartbeats that keep it from
    campaigning (Raft tolerates the reordering between lanes; each lane keeps its own order)."""

    def __init__(
        self,
        address: str,
        options: list[tuple[str, Any]],
        max_pending: int,
        stats: Counter[str],
        credentials: grpc.ChannelCredentials | None = None,
        max_batch_bytes: int = 1 << 31,
        session: PeerSession | None = None,
    ) -> None:
        self.address = address
        self.session = session
        self.told_unauthenticated = False
        self.max_pending = max_pending
        self.max_batch_bytes = max_batch_bytes
        self.stats = stats
        self._channel = (
            grpc.aio.insecure_channel(address, options=options)
            if credentials is None
            else grpc.aio.secure_channel(address, credentials, options=options)
        )
        self.stub = pb_grpc.RaftPeerStub(self._channel)
        # the Stream method with pass-through serialization: batches are framed bytes already
        self._stream = self._channel.stream_unary(
            STREAM_METHOD, request_serializer=_as_is, response_deserializer=pb.PeerAck.FromString
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # a seam for tests
        self.control = _Lane(self, "control")
        self.bulk = _Lane(self, "bulk")

    @property
    def connected(self) -> bool:
        return self.control.connected or self.bulk.connected

    def start(self) -> None:
        self.control.start()
        self.bulk.start()

    def push(self, messages: Sequence[Outgoing]) -> None:
        control, bulk = split_lanes(messages)
        if control:
            self.control.push(control)
        if bulk:
            self.bulk.push(bulk)

    async def call_metadata(self) -> Sequence[tuple[str, bytes]] | None:
        """What authenticates a call to the peer (handshaking first when needed); None without a session."""
        if self.session is None:
            return None
        return await self.session.metadata(self._channel, HANDSHAKE_DEADLINE)

    async def close(self) -> None:
        await asyncio.gather(self.control.close(), self.bulk.close())
        await self._channel.close()


class PeerTransport:
    """The outgoing half: `send(to_id, messages)` queues; one `_PeerLink` per peer streams the queue."""

    def __init__(
        self,
        self_id: str,
        peers: Mapping[str, str],
        *,
        max_message_bytes: int,
        max_pending: int = 8192,
        credentials: grpc.ChannelCredentials | None = None,
        session: Callable[[str], PeerSession] | None = None,
    ) -> None:
        """`credentials`: TLS for every link (with a client certificate for mutual TLS); None: plaintext.
        `session`: makes the authenticated session towards a peer id (secret mode); None: calls carry none."""
        self.self_id = self_id
        self._session = session
        self.stats: Counter[str] = Counter()
        self._options = channel_options(max_message_bytes)
        self._max_message_bytes = max_message_bytes
        self._max_pending = max_pending
        self._credentials = credentials
        self._links = LinkTable(self_id, peers, self._link, self.stats)

    def _link(self, node_id: str, address: str) -> _PeerLink:
        return _PeerLink(
            address,
            self._options,
            self._max_pending,
            self.stats,
            self._credentials,
            self._max_message_bytes,
            self._session(node_id) if self._session is not None else None,
        )

    def start(self) -> None:
        self._links.start()

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """Membership changed: open links to new peers (or to a peer's new address), close the others."""
        self._links.set_peers(peers)

    def send(self, to_id: str, messages: Sequence[Outgoing]) -> None:
        self._links.send(to_id, messages)

    async def send_snapshot_chunk(self, to_id: str, chunk: pb.SnapshotChunk, timeout: float) -> pb.SnapshotAck:
        """One chunk of a snapshot, as a unary call beside the stream (raises when the peer is unreachable)."""
        link = self._links.links.get(to_id)
        if link is None:
            raise LookupError(f"{to_id!r} is not a peer")
        try:
            ack: pb.SnapshotAck = await link.stub.SendSnapshotChunk(
                chunk, timeout=timeout, metadata=await link.call_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED and link.session is not None:
                link.session.forget()
            raise
        return ack

    def connected(self, to_id: str) -> bool:
        return self._links.connected(to_id)

    async def close(self) -> None:
        await self._links.close()
