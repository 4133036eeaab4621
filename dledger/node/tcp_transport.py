"""The dialling half of the TCP peer transport: `TcpPeerTransport`, the node's `Transport` over framed TCP
(frames: `dledger.net.peer_frames`; the listening half: `tcp_listener`).

The same contract as the gRPC transport (`transport.PeerTransport`), on a framed connection per lane:
- `send(to, messages)` never blocks: towards each peer, appends that carry entries go on the `bulk` lane
  and everything else on the `control` lane, each with its own connection and bounded outbox
  (`max_pending`, the newest kept while the peer is unreachable); a connected lane writes its outbox at
  the end of the loop turn that queued it (so what the driver sends in one turn, such as a heartbeat's
  answer and an append's, leaves together and in order), as BATCH frames of at most `max_message_bytes`
  in one `writelines`; while the socket's buffer is above its high-water mark (`pause_writing`) messages
  wait in the outbox and go when it drains; on the bulk lane (plain TCP) a write of `OFFLOAD_BYTES` or more
  is handed to a thread that makes the system call (`FrameConnection.offload_writes`), so the node's loop
  goes on with the next Ready while the kernel moves the bytes, as gRPC's own threads do for its streams;
- a lane dials only with something to send, and after a failure retries after a backoff doubling from
  `RETRY_MIN` up to `RETRY_MAX` (100 ms);
- on connect the lane handshakes (HELLO, or the secret handshake in AUTH frames) within
  `handshake_timeout`; a refusal is logged once per distinct reason per lane;
- liveness: the listener ACKs what it receives; a lane that wrote and heard nothing back for
  `silence_timeout` seconds (the election timeout's scale) takes the connection for dead (a partition that
  drops packets, a paused peer), closes it and redials;
- snapshot chunks travel over the gRPC peer service on the node's own address (`snapshots`, a gRPC
  `PeerTransport` whose streams are never started), which is resumable and authenticated as before.

Invariants: messages of one lane leave in order; nothing is written before the handshake succeeded; a
lane's task never dies of an error (it logs and redials); `close` ends every lane and connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence

from dledger._proto import dledger_pb2 as pb
from dledger.net.connection import FrameConnection
from dledger.net.handshake import NONCE_BYTES, Dialler, HandshakeError
from dledger.net.peer_frames import (
    Frame,
    FrameType,
    PeerFrameDecoder,
    batch_parts,
    encode,
    hello_body,
    parse_refusal,
    refusal_body,
)
from dledger.node.codec import Parts, wire_size
from dledger.node.peer_auth import PeerAuthMode
from dledger.node.peer_links import LinkTable, Outgoing, admit, split_lanes
from dledger.node.tcp_peer import tcp_peer_address
from dledger.node.transport import PeerTransport

__all__ = ["OFFLOAD_BYTES", "RETRY_MAX", "RETRY_MIN", "TcpPeerTransport"]

log = logging.getLogger(__name__)

RETRY_MIN = 0.01
RETRY_MAX = 0.1
OFFLOAD_BYTES = 32 << 10  # a bulk write this large goes through the lane's write thread
_FRAMING = 6  # bytes a batch adds per message at most: the field tag and a 5-byte length


class _Lane:
    """One connection towards a peer: a bounded outbox, and the task that dials, handshakes and watches."""

    def __init__(self, link: _TcpLink, name: str) -> None:
        self.link = link
        self.name = name
        self.outbox: deque[bytes | Parts] = deque()
        self.wakeup = asyncio.Event()
        self.conn: FrameConnection[Frame] | None = None
        self.unanswered_since = 0.0  # when we first wrote after the peer's last ACK (0: nothing unanswered)
        self.last_refusal = ""
        self.flush_due = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.is_open

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"peer-{self.name}-{self.link.peer_id}")

    def push(self, messages: Sequence[bytes | Parts]) -> None:
        admit(
            self.outbox, messages, max_pending=self.link.max_pending, connected=self.connected, stats=self.link.stats
        )
        if not self.connected:
            self.wakeup.set()
        elif not self.flush_due:  # at the end of this loop turn: what the driver queues meanwhile joins it
            self.flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the outbox as BATCH frames while the connection takes more (one writelines for all)."""
        self.flush_due = False
        conn = self.conn
        outbox = self.outbox
        if conn is None or not outbox or not conn.writable or not conn.is_open:
            return
        limit = self.link.max_message_bytes
        stats = self.link.stats
        parts: list[bytes] = []
        while outbox:
            taken: list[bytes | Parts] = []
            size = 0
            while outbox:
                n = wire_size(outbox[0]) + _FRAMING
                if taken and size + n > limit:
                    stats["batches_split"] += 1
                    break
                taken.append(outbox.popleft())
                size += n
            frame, _ = batch_parts(taken)
            parts += frame
            stats["batches_sent"] += 1
        conn.write(parts)
        if not self.unanswered_since:
            self.unanswered_since = time.monotonic()

    def _on_frames(self, conn: FrameConnection[Frame], frames: list[Frame]) -> None:
        for frame in frames:
            if frame.kind == FrameType.ACK:
                self.unanswered_since = 0.0
            elif frame.kind == FrameType.REFUSE:
                conn.fail(f"{self.link.peer_id} refused our messages: {parse_refusal(frame.body)}")
                return
            else:
                conn.fail(f"unexpected {frame.kind.name} frame from {self.link.peer_id}")
                return

    async def _run(self) -> None:
        link, stats = self.link, self.link.stats
        delay = RETRY_MIN
        while True:
            while not self.outbox:  # an idle lane does not dial: nothing to say, nothing to retry
                self.wakeup.clear()
                await self.wakeup.wait()
            try:
                conn = await link.dial(self)
            except asyncio.CancelledError:
                raise
            except (HandshakeError, ValueError, ssl.SSLError) as exc:  # ValueError: no peer port; TLS refusals
                stats["handshake_refused"] += 1
                if str(exc) != self.last_refusal:
                    self.last_refusal = str(exc)
                    log.error("peer %s (%s lane): %s", link.peer_id, self.name, exc)
            except (OSError, TimeoutError, EOFError) as exc:
                stats["dial_failed"] += 1
                log.debug("peer %s (%s lane): cannot connect: %s", link.peer_id, self.name, exc)
            except Exception:  # a bug must not kill the lane silently
                log.exception("peer %s (%s lane): dialling failed", link.peer_id, self.name)
            else:
                if self.last_refusal:
                    log.info("peer %s (%s lane): connected again", link.peer_id, self.name)
                    self.last_refusal = ""
                delay = RETRY_MIN
                await self._serve(conn)
                await asyncio.sleep(RETRY_MIN)
                continue
            # what waited for a peer that could not be reached is stale by the time it is: drop it (Raft sends
            # again what still matters), or a peer back from a long partition would get a backlog
            stats["dropped_stale"] += len(self.outbox)
            self.outbox.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _serve(self, conn: FrameConnection[Frame]) -> None:
        """Use the connection until it closes or stays silent too long."""
        self.conn = conn
        self.unanswered_since = 0.0
        conn.on_frames = self._on_frames
        conn.on_writable = self.flush
        if self.name == "bulk":
            conn.offload_writes(OFFLOAD_BYTES)
        silence = self.link.silence_timeout
        try:
            self.flush()
            while not conn.closed.done():
                started = time.monotonic()
                await asyncio.wait([conn.closed], timeout=silence / 4)
                if time.monotonic() - started > silence / 2:
                    continue  # this loop stalled: an ACK may be waiting unread; judge on the next round
                since = self.unanswered_since
                if since and time.monotonic() - since > silence and conn.is_open:
                    self.link.stats["silent_redial"] += 1
                    why = f"no answer from {self.link.peer_id} for {silence * 1000:.0f} ms: redialling"
                    conn.fail(why, logging.INFO)
        finally:
            self.conn = None
            conn.abort()
        self.link.stats["connection_lost"] += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.conn is not None:
            self.conn.abort()


class _Dialling:
    """A connection during its handshake: frames queue up for the dialling coroutine."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()

    def on_frames(self, conn: FrameConnection[Frame], frames: list[Frame]) -> None:
        for f in frames:
            self.frames.put_nowait(f)

    def on_lost(self, conn: FrameConnection[Frame]) -> None:
        self.frames.put_nowait(None)

    async def next(self, peer_id: str) -> Frame:
        frame = await self.frames.get()
        if frame is None:
            raise EOFError(f"{peer_id} closed the connection during the handshake")
        if frame.kind == FrameType.REFUSE:
            raise HandshakeError(f"refused by the peer: {parse_refusal(frame.body)}")
        return frame


class _TcpLink:
    """The outgoing side towards one peer: two lanes (see `transport._PeerLink` for why two)."""

    def __init__(self, owner: TcpPeerTransport, peer_id: str, address: str) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.address = address
        self.stats = owner.stats
        self.max_pending = owner.max_pending
        self.max_message_bytes = owner.max_message_bytes
        self.silence_timeout = owner.silence_timeout
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

    async def dial(self, lane: _Lane) -> FrameConnection[Frame]:
        """A connection to the peer that passed the handshake (raises OSError, TimeoutError, EOFError or
        HandshakeError otherwise)."""
        owner = self.owner
        host, port = tcp_peer_address(self.address, owner.port_offset)
        dialling = _Dialling()
        loop = asyncio.get_running_loop()

        def protocol() -> FrameConnection[Frame]:
            return FrameConnection(
                PeerFrameDecoder(owner.max_message_bytes),
                dialling.on_frames,
                on_lost=dialling.on_lost,
                name=f"peer {lane.name} link to {self.peer_id}",
            )

        async with asyncio.timeout(owner.handshake_timeout):
            _, conn = await loop.create_connection(
                protocol, host, port, ssl=owner.ssl_context, server_hostname=host if owner.ssl_context else None
            )
            try:
                await self._handshake(conn, dialling)
            except BaseException:
                conn.abort()
                raise
        conn.on_lost = None
        return conn

    async def _handshake(self, conn: FrameConnection[Frame], dialling: _Dialling) -> None:
        owner = self.owner
        if owner.mode != "secret":
            conn.write([encode(FrameType.HELLO, hello_body(owner.group, owner.self_id, self.peer_id))])
            frame = await dialling.next(self.peer_id)
            if frame.kind != FrameType.WELCOME:
                raise HandshakeError(f"{self.peer_id} answered HELLO with {frame.kind.name}")
            return
        dialler = Dialler(owner.secret, owner.group, owner.self_id, self.peer_id, os.urandom(NONCE_BYTES))
        conn.write([encode(FrameType.AUTH, dialler.hello())])
        while not dialler.done:
            frame = await dialling.next(self.peer_id)
            if frame.kind != FrameType.AUTH:
                raise HandshakeError(f"{self.peer_id} sent {frame.kind.name} during the handshake")
            try:
                reply = dialler.receive(bytes(frame.body))
            except HandshakeError as exc:
                conn.write([encode(FrameType.REFUSE, refusal_body(str(exc)))])
                raise
            if reply:
                conn.write([encode(FrameType.AUTH, reply)])

    async def close(self) -> None:
        await asyncio.gather(self.control.close(), self.bulk.close())


class TcpPeerTransport:
    """The outgoing half over framed TCP; the same methods as `transport.PeerTransport`."""

    def __init__(
        self,
        group: str,
        self_id: str,
        peers: Mapping[str, str],
        snapshots: PeerTransport,
        *,
        mode: PeerAuthMode,
        max_message_bytes: int,
        port_offset: int,
        silence_timeout: float,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_pending: int = 8192,
        handshake_timeout: float = 2.0,
    ) -> None:
        """`snapshots`: the gRPC transport that carries snapshot chunks (its streams are not started)."""
        if mode == "secret" and not secret:
            raise ValueError("secret mode needs a secret")
        self.group, self.self_id, self.mode = group, self_id, mode
        self.secret = secret or b""
        self.snapshots = snapshots
        self.stats: Counter[str] = Counter()
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.port_offset = port_offset
        self.silence_timeout = silence_timeout
        self.handshake_timeout = handshake_timeout
        self.ssl_context = ssl_context
        self._links = LinkTable(self_id, peers, lambda i, a: _TcpLink(self, i, a), self.stats)

    def start(self) -> None:
        self._links.start()

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """Membership changed: open links to new peers (or to a peer's new address), close the others."""
        self.snapshots.set_peers(peers)
        self._links.set_peers(peers)

    def send(self, to_id: str, messages: Sequence[Outgoing]) -> None:
        self._links.send(to_id, messages)

    async def send_snapshot_chunk(self, to_id: str, chunk: pb.SnapshotChunk, timeout: float) -> pb.SnapshotAck:
        return await self.snapshots.send_snapshot_chunk(to_id, chunk, timeout)

    def connected(self, to_id: str) -> bool:
        return self._links.connected(to_id)

    async def close(self) -> None:
        await self._links.close()
        await self.snapshots.close()
