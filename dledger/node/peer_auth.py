"""Who is speaking on the peer service: peer authentication on gRPC, in one of three modes.

- `secret`: before anything else, the dialling node runs the handshake of `dledger.net.handshake` (both
  sides prove the group secret) on the `Handshake` method, a bidirectional stream of raw handshake
  messages. The listener then keeps a session bound to that connection (gRPC's peer address of the call);
  later calls present it in the `dledger-peer-session-bin` metadata, and every message they carry must come
  from the node the handshake authenticated.
- `tls`: mutual TLS, where a peer's certificate names its node with a URI SAN `dledger://<group>/<node-id>`;
  a certificate without one (a client certificate) is refused on the peer service, and every message must
  come from the node the certificate names.
- `none`: nobody is authenticated (an operator's explicit choice, or a loopback-only group without a
  secret); the group id and recipient checks of the transport still apply.

Invariants: in `secret` and `tls` mode `PeerGate.identify` either names the node that every message of the
call must come from or raises `PeerAuthError`, before any message is read; the session table is bounded
(`MAX_SESSIONS`, oldest dropped first: that dialler is refused once and handshakes again); a listener's
handshake that does not finish within `HANDSHAKE_TIMEOUT` seconds is dropped; the secret never reaches a log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import grpc
import grpc.aio

from dledger.net.handshake import NONCE_BYTES, Dialler, HandshakeError, Listener, refusal
from dledger.node.config import NodeConfig
from dledger.node.log_limits import LogLimiter

__all__ = [
    "HANDSHAKE_METHOD",
    "SESSION_KEY",
    "PeerAuthError",
    "PeerAuthMode",
    "PeerGate",
    "PeerSession",
    "StaleSessionError",
    "node_of_certificate",
    "peer_sessions",
]

log = logging.getLogger(__name__)

PeerAuthMode = Literal["secret", "tls", "none"]
HANDSHAKE_SERVICE = "dledger.v1.RaftPeerAuth"
HANDSHAKE_METHOD = f"/{HANDSHAKE_SERVICE}/Handshake"
SESSION_KEY = "dledger-peer-session-bin"
URI_PREFIX = "dledger://"
MAX_SESSIONS = 4096
HANDSHAKE_TIMEOUT = 10.0
Metadata = Sequence[tuple[str, bytes]]


class PeerAuthError(Exception):
    """A peer call that is not authenticated; the message says why in one line."""


class StaleSessionError(PeerAuthError):
    """A session this node does not know: normal after it restarted (the dialler handshakes again)."""


def node_of_certificate(uris: Sequence[bytes], group: str) -> str:
    """The node id a peer certificate names for `group` (its one `dledger://<group>/<id>` URI SAN)."""
    named = [u.decode(errors="replace") for u in uris if u.startswith(URI_PREFIX.encode())]
    ours = [u[len(URI_PREFIX) :].partition("/") for u in named]
    ids = [node_id for g, sep, node_id in ours if sep and g == group and node_id]
    if len(ids) != 1:
        found = ", ".join(named) or "none"
        raise PeerAuthError(
            f"the peer's certificate names no single node of group {group!r} "
            f"(a URI SAN {URI_PREFIX}{group}/<node-id>; found: {found}); a client certificate cannot speak as a peer"
        )
    return ids[0]


class PeerGate:
    """The listening side: the Handshake method (secret mode) and `identify(context)` for every peer call."""

    def __init__(
        self,
        mode: PeerAuthMode,
        group: str,
        self_id: str,
        secret: bytes | None = None,
        *,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if mode == "secret" and not secret:
            raise ValueError("secret mode needs a secret")
        self.mode = mode
        self.group = group
        self.self_id = self_id
        self._secret = secret or b""
        self._nonce = nonce
        self._sessions: OrderedDict[bytes, tuple[str, str]] = OrderedDict()  # session -> (node id, connection)
        self.limiter = LogLimiter()
        self.refused = 0

    def register(self, server: grpc.aio.Server) -> None:
        """Add the Handshake method to `server` (in secret mode; the other modes need none)."""
        if self.mode != "secret":
            return
        handler = grpc.stream_stream_rpc_method_handler(self._handshake)  # raw bytes: no (de)serializers
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(HANDSHAKE_SERVICE, {"Handshake": handler})]
        )

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The node every message of this call must come from (None in mode `none`); PeerAuthError if none."""
        if self.mode == "none":
            return None
        if self.mode == "tls":
            auth = context.auth_context()
            return node_of_certificate(auth.get("peer_uri", []), self.group)
        session = next((value for key, value in context.invocation_metadata() or () if key == SESSION_KEY), None)
        if not isinstance(session, bytes):
            raise PeerAuthError("no authenticated peer session on this call (handshake first)")
        found = self._sessions.get(session)
        if found is None:
            raise StaleSessionError("an unknown peer session (made before this node restarted?): handshake again")
        node_id, connection = found
        if connection != context.peer():
            raise PeerAuthError(f"{node_id!r}'s session was made on another connection")
        return node_id

    def note_refusal(self, what: str, reason: str, peer: str, level: int = logging.WARNING) -> None:
        self.refused += 1
        if self.limiter.allow(what):
            log.log(level, "refused %s from %s: %s%s", what, peer, reason, self.limiter.suppressed(what))

    async def _handshake(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        listener = Listener(self._secret, self.group, self.self_id, self._nonce(NONCE_BYTES))
        try:
            while not listener.done:
                try:
                    data = await asyncio.wait_for(anext(requests), HANDSHAKE_TIMEOUT)
                except (StopAsyncIteration, TimeoutError):
                    raise HandshakeError("the dialler did not finish the handshake") from None
                reply = listener.receive(data)
                if listener.done:  # before the ACCEPT leaves: the dialler's next call presents the session
                    self._keep(listener.session, listener.peer_id, context.peer())
                yield reply
        except HandshakeError as exc:
            who = f"{listener.peer_id} at {context.peer()}" if listener.peer_id else context.peer()
            self.note_refusal("a peer handshake", str(exc), who)
            yield refusal("authentication failed" if listener.peer_id else str(exc))
            return

    def _keep(self, session: bytes, peer_id: str, connection: str) -> None:
        self._sessions[session] = (peer_id, connection)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        log.info("peer %s authenticated (from %s)", peer_id, connection)


class PeerSession:
    """The dialling side towards one peer, secret mode: handshakes on first use, then presents the session."""

    def __init__(
        self,
        secret: bytes,
        group: str,
        self_id: str,
        peer_id: str,
        *,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._secret = secret
        self.group, self.self_id, self.peer_id = group, self_id, peer_id
        self._nonce = nonce
        self._metadata: Metadata | None = None
        self._last_failure = ""
        self._lock = asyncio.Lock()  # a link's two streams share one handshake

    async def metadata(self, channel: grpc.aio.Channel, timeout: float) -> Metadata:
        """The metadata that authenticates a call on `channel`, handshaking first when there is no session.
        Raises HandshakeError (refused: logged once per distinct reason) or grpc.aio.AioRpcError."""
        async with self._lock:
            return await self._metadata_locked(channel, timeout)

    async def _metadata_locked(self, channel: grpc.aio.Channel, timeout: float) -> Metadata:
        if self._metadata is None:
            try:
                session = await self._handshake(channel, timeout)
            except HandshakeError as exc:
                if str(exc) != self._last_failure:
                    self._last_failure = str(exc)
                    log.error("peer %s: authentication failed: %s", self.peer_id, exc)
                raise
            if self._last_failure:
                log.info("peer %s: authenticated again", self.peer_id)
                self._last_failure = ""
            self._metadata = ((SESSION_KEY, session),)
        return self._metadata

    def forget(self) -> None:
        """The peer refused the session (it restarted, or the connection changed): handshake again."""
        self._metadata = None

    async def _handshake(self, channel: grpc.aio.Channel, timeout: float) -> bytes:
        dialler = Dialler(self._secret, self.group, self.self_id, self.peer_id, self._nonce(NONCE_BYTES))
        call = channel.stream_stream(HANDSHAKE_METHOD)(timeout=timeout)
        try:
            await call.write(dialler.hello())
            while not dialler.done:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    raise HandshakeError(f"{self.peer_id} ended the handshake")
                try:
                    proof = dialler.receive(reply)
                except HandshakeError as exc:
                    if not str(exc).startswith("refused by the peer"):  # tell the listener why, in one line
                        await call.write(refusal(str(exc)))
                    raise
                if proof:
                    await call.write(proof)
            await call.done_writing()
        finally:
            call.cancel()
        return dialler.session


def peer_sessions(config: NodeConfig) -> Callable[[str], PeerSession] | None:
    """What makes a node's session towards each peer: a handshake in secret mode, nothing otherwise."""
    if config.peer_auth_mode != "secret" or config.peer_secret is None:
        return None
    secret, group, self_id = config.peer_secret, config.group, config.self_id
    return lambda peer_id: PeerSession(secret, group, self_id, peer_id)
