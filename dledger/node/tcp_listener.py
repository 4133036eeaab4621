"""The listening half of the TCP peer transport: accepts peer connections, authenticates them, checks
every batch, and hands the messages to the node (frames: `dledger.net.peer_frames`).

A connection is first in its handshake: the dialler's HELLO (peer authentication `none` or `tls`) or the
secret handshake's messages (`secret`, carried in AUTH frames). HELLO names group, sender and recipient: a
wrong group or recipient, or a sender that claims this node's own id, is refused; under `tls` the sender
must be the node the client certificate names (`peer_auth.node_of_certificate`). A refusal sends REFUSE
with a reason, logs it (rate-limited) and closes the connection; so does a handshake that does not finish
within `handshake_timeout` seconds.

Once accepted, every BATCH goes through `check(batch, sender)` (the same rules as the gRPC peer service:
group ours, recipient us, sender the authenticated node, no bare InstallSnapshot); a refused batch closes
the connection and changes nothing. The listener ACKs a connection at most once per `ack_delay` seconds
while bytes arrive, also in the middle of a long frame (the dialler's proof that this end is alive and
reading, see tcp_transport).

Invariants: malformed bytes, an undecodable batch or a frame out of turn close that connection only, with
one logged line; nothing from a peer reaches `on_messages` before its connection is authenticated; the
secret never reaches a log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from typing import cast

from google.protobuf.message import DecodeError

from dledger._proto import dledger_pb2 as pb
from dledger.net.connection import FrameConnection
from dledger.net.handshake import NONCE_BYTES, HandshakeError, Listener
from dledger.net.peer_frames import (
    Frame,
    FrameType,
    PeerFrameDecoder,
    PeerFrameError,
    encode,
    parse_hello,
    parse_refusal,
    refusal_body,
)
from dledger.node.log_limits import LogLimiter
from dledger.node.peer_auth import PeerAuthError, PeerAuthMode, node_of_certificate
from dledger.node.tcp_peer import peer_certificate_uris

__all__ = ["TcpPeerListener"]

log = logging.getLogger(__name__)

Check = Callable[[pb.PeerBatch, str | None], str | None]
OnMessages = Callable[[Sequence[pb.PeerMessage]], None]
_ACK = encode(FrameType.ACK)
_WELCOME = encode(FrameType.WELCOME)


class _Inbound:
    """One accepted connection's state."""

    __slots__ = ("ack_pending", "conn", "handshake", "open", "sender", "timer")

    def __init__(self, conn: FrameConnection[Frame]) -> None:
        self.conn = conn
        self.open = False
        self.sender: str | None = None
        self.handshake: Listener | None = None
        self.ack_pending = False
        self.timer: asyncio.TimerHandle | None = None


class TcpPeerListener:
    """Serves peer frames on (host, port); see the module docstring."""

    def __init__(
        self,
        group: str,
        self_id: str,
        mode: PeerAuthMode,
        check: Check,
        on_messages: OnMessages,
        *,
        max_message_bytes: int,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ack_delay: float = 0.025,
        handshake_timeout: float = 5.0,
    ) -> None:
        if mode == "secret" and not secret:
            raise ValueError("secret mode needs a secret")
        if mode == "tls" and ssl_context is None:
            raise ValueError("tls mode needs TLS")
        self.group, self.self_id, self.mode = group, self_id, mode
        self.check = check
        self.on_messages = on_messages
        self.max_message_bytes = max_message_bytes
        self._secret = secret or b""
        self.ssl_context = ssl_context
        self.ack_delay = ack_delay
        self.handshake_timeout = handshake_timeout
        self.limiter = LogLimiter()
        self.refused = 0
        self.batches = 0
        self._server: asyncio.Server | None = None
        self._conns: set[FrameConnection[Frame]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0). OSError when the port is taken."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, host, port, ssl=self.ssl_context, reuse_address=True, backlog=128
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _connection(self) -> FrameConnection[Frame]:
        state: _Inbound | None = None

        def on_frames(conn: FrameConnection[Frame], frames: list[Frame]) -> None:
            assert state is not None
            self._frames(state, frames)

        def on_lost(conn: FrameConnection[Frame]) -> None:
            self._conns.discard(conn)
            if state is not None and state.timer is not None:
                state.timer.cancel()

        conn: FrameConnection[Frame] = FrameConnection(
            PeerFrameDecoder(self.max_message_bytes), on_frames, on_lost=on_lost, name=f"peer listener {self.self_id}"
        )
        state = _Inbound(conn)
        self._conns.add(conn)
        state.timer = asyncio.get_running_loop().call_later(self.handshake_timeout, self._too_slow, state)
        return conn

    def _too_slow(self, state: _Inbound) -> None:
        if not state.open:
            self._refuse(state, "the dialler did not finish the handshake in time", "handshake timeout")

    def _refuse(self, state: _Inbound, reason: str, told: str | None = None) -> None:
        """Tell the dialler `told` (default: `reason`), log `reason`, close."""
        self.refused += 1
        conn = state.conn
        if self.limiter.allow("refusal"):
            who = f"{state.sender} at {conn.peer}" if state.sender else conn.peer
            log.warning("refused a peer connection from %s: %s%s", who, reason, self.limiter.suppressed("refusal"))
        conn.write([encode(FrameType.REFUSE, refusal_body(told if told is not None else reason))])
        conn.failure = reason
        conn.close()

    def _frames(self, state: _Inbound, frames: list[Frame]) -> None:
        for frame in frames:
            if state.conn.failure:
                return
            if frame.kind == FrameType.REFUSE:  # the dialler gave up on us, and says why
                self._refuse(state, f"the dialler refused: {parse_refusal(frame.body)}")
            elif state.open:
                self._open_frame(state, frame)
            elif self.mode == "secret":
                self._auth_frame(state, frame)
            else:
                self._hello_frame(state, frame)

    def _accepted(self, state: _Inbound, sender: str) -> None:
        state.open = True
        state.sender = sender
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        state.conn.on_data = lambda: self._schedule_ack(state)
        log.info("peer %s connected (from %s)", sender, state.conn.peer)

    def _hello_frame(self, state: _Inbound, frame: Frame) -> None:
        if frame.kind == FrameType.AUTH:
            self._refuse(state, "a secret handshake, but this node runs without a peer secret")
            return
        if frame.kind != FrameType.HELLO:
            self._refuse(state, f"a {frame.kind.name} frame before HELLO")
            return
        try:
            group, sender, recipient = parse_hello(frame.body)
        except PeerFrameError as exc:
            self._refuse(state, str(exc))
            return
        reason = self._misnamed(group, sender, recipient)
        if reason is None and self.mode == "tls":
            try:
                named = node_of_certificate(peer_certificate_uris(self._ssl_object(state)), self.group)
            except PeerAuthError as exc:
                reason = str(exc)
            else:
                if named != sender:
                    reason = f"a HELLO from {sender!r} on a connection whose certificate names {named!r}"
        if reason is not None:
            self._refuse(state, reason)
            return
        self._accepted(state, sender)
        state.conn.write([_WELCOME])

    def _ssl_object(self, state: _Inbound) -> object:
        transport = state.conn.transport
        return transport.get_extra_info("ssl_object") if transport is not None else None

    def _misnamed(self, group: str, sender: str, recipient: str) -> str | None:
        if group != self.group:
            return f"a dialler of group {group!r} reached group {self.group!r}"
        if recipient != self.self_id:
            return f"a dialler for {recipient!r} reached {self.self_id!r}"
        if sender == self.self_id:
            return f"a dialler claimed this node's own id {sender!r}"
        return None

    def _auth_frame(self, state: _Inbound, frame: Frame) -> None:
        if frame.kind == FrameType.HELLO:
            self._refuse(state, "a HELLO without the secret handshake: this group wants peers to prove its secret")
            return
        if frame.kind != FrameType.AUTH:
            self._refuse(state, f"a {frame.kind.name} frame before the handshake finished")
            return
        if state.handshake is None:
            state.handshake = Listener(self._secret, self.group, self.self_id, os.urandom(NONCE_BYTES))
        listener = state.handshake
        try:
            reply = listener.receive(bytes(frame.body))
        except HandshakeError as exc:
            state.sender = listener.peer_id or None
            self._refuse(state, str(exc), "authentication failed" if listener.peer_id else str(exc))
            return
        if listener.done:
            self._accepted(state, listener.peer_id)
        state.conn.write([encode(FrameType.AUTH, reply)])

    def _open_frame(self, state: _Inbound, frame: Frame) -> None:
        if frame.kind != FrameType.BATCH:
            state.conn.fail(f"unexpected {frame.kind.name} frame from {state.sender}")
            return
        try:
            batch = pb.PeerBatch.FromString(cast(bytes, frame.body))  # protobuf parses any buffer, uncopied
        except DecodeError:
            state.conn.fail(f"an undecodable batch from {state.sender}")
            return
        reason = self.check(batch, state.sender)
        if reason is not None:
            self._refuse(state, reason)
            return
        self.batches += 1
        if batch.messages:
            self.on_messages(batch.messages)

    def _schedule_ack(self, state: _Inbound) -> None:
        if not state.ack_pending:
            state.ack_pending = True
            asyncio.get_running_loop().call_later(self.ack_delay, self._ack, state)

    @staticmethod
    def _ack(state: _Inbound) -> None:
        state.ack_pending = False
        state.conn.write([_ACK])
