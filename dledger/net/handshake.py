"""The peer handshake: two nodes prove to each other that they hold the group's secret (sans-I/O).

Bytes in, bytes out: no sockets, no clock, no randomness of its own (each side is handed its nonce), so any
transport can carry it and tests and fuzzers drive it directly. Three messages, each one self-delimited
frame that the transport carries whole:

    HELLO      dialler -> listener   version, group, sender id, recipient id, the dialler's nonce
    CHALLENGE  listener -> dialler   the listener's nonce, proof_l = HMAC(secret, "listener" | transcript)
    PROOF      dialler -> listener   proof_d = HMAC(secret, "dialler" | transcript)
    ACCEPT     listener -> dialler   empty: the listener took the proof

`transcript` is every field of HELLO and the listener's nonce, each length-prefixed. Either side may answer
with REFUSE (a short reason) instead; the other side then fails with that reason.

Invariants:
- A side is `done` only after checking the other's proof: the dialler checks proof_l before it sends
  proof_d (and is done once the ACCEPT arrives), the listener checks proof_d before it answers ACCEPT; so
  both directions are authenticated.
- Every proof covers both fresh nonces, so a recorded handshake cannot be replayed to either side, and the
  two proofs carry different labels, so one side's proof can never be reflected as the other's.
- Proofs are compared in constant time. Malformed input (wrong magic or version, truncated, oversized,
  unexpected message type, a message out of turn) raises `HandshakeError`; nothing else is raised.
- After success both sides hold the same `session` value (an HMAC of the transcript under its own label):
  a transport that authenticates later calls on another channel (gRPC's separate RPCs) presents it; it is
  never derivable without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

__all__ = [
    "MIN_SECRET_BYTES",
    "NONCE_BYTES",
    "VERSION",
    "Dialler",
    "HandshakeError",
    "Listener",
    "refusal",
]

VERSION = 1
NONCE_BYTES = 32
MIN_SECRET_BYTES = 16
MAX_ID_BYTES = 255
_MAGIC = b"DLPA"
_HELLO, _CHALLENGE, _PROOF, _REFUSE, _ACCEPT = 1, 2, 3, 4, 5
_HEAD = struct.Struct(">4sBB")  # magic, version, message type
_MAC_BYTES = 32  # SHA-256
_MAX_REASON = 200


class HandshakeError(Exception):
    """The handshake failed; the message says why in one line (safe to log, never contains the secret)."""


def _mac(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, b"dledger-peer-auth-v1/" + label + b"\0" + transcript, hashlib.sha256).digest()


def _field(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def _transcript(group: str, dialler: str, listener: str, nonce_d: bytes, nonce_l: bytes) -> bytes:
    return b"".join(_field(v) for v in (group.encode(), dialler.encode(), listener.encode(), nonce_d, nonce_l))


class _Reader:
    """Reads the fields of one message; every shortfall is a HandshakeError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise HandshakeError("handshake message truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self) -> str:
        (n,) = self.take(1)
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise HandshakeError("handshake message carries an id that is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise HandshakeError("handshake message has trailing bytes")


def _message(kind: int, body: bytes) -> bytes:
    return _HEAD.pack(_MAGIC, VERSION, kind) + body


def _open(data: bytes, expected: int) -> _Reader:
    """The body of a message of type `expected`; a REFUSE becomes HandshakeError with its reason."""
    if len(data) < _HEAD.size:
        raise HandshakeError("handshake message truncated")
    magic, version, kind = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise HandshakeError("not a dledger peer handshake")
    if version != VERSION:
        raise HandshakeError(f"peer handshake version {version}; this node speaks {VERSION}")
    reader = _Reader(data)
    reader.pos = _HEAD.size
    if kind == _REFUSE:
        reason = reader.take(min(len(data) - _HEAD.size, _MAX_REASON)).decode(errors="replace")
        raise HandshakeError(f"refused by the peer: {reason}")
    if kind != expected:
        raise HandshakeError(f"handshake message of type {kind} out of turn")
    return reader


def refusal(reason: str) -> bytes:
    """A REFUSE message carrying `reason` (cut to 200 bytes)."""
    return _message(_REFUSE, reason.encode()[:_MAX_REASON])


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the peer secret must have at least {MIN_SECRET_BYTES} bytes")


def _check_id(what: str, value: str) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > MAX_ID_BYTES:
        raise ValueError(f"{what} must have 1..{MAX_ID_BYTES} bytes")
    return raw


class Dialler:
    """The side that opens the connection: `hello()`; `receive(challenge)` returns the PROOF to send;
    `receive(accept)` returns b"" and the handshake is `done`."""

    def __init__(self, secret: bytes, group: str, self_id: str, peer_id: str, nonce: bytes) -> None:
        _check_secret(secret)
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
        self._secret = secret
        self.group, self.self_id, self.peer_id = group, self_id, peer_id
        self._nonce = nonce
        self._fields = b"".join(
            bytes([len(raw)]) + raw
            for raw in (_check_id("group", group), _check_id("self_id", self_id), _check_id("peer_id", peer_id))
        )
        self._sent_hello = False
        self._session = b""
        self.done = False
        self.session = b""

    def hello(self) -> bytes:
        if self._sent_hello:
            raise HandshakeError("hello already sent")
        self._sent_hello = True
        return _message(_HELLO, self._fields + self._nonce)

    def receive(self, data: bytes) -> bytes:
        """Take the listener's CHALLENGE (return the PROOF to send) or its ACCEPT (return b"": done)."""
        if not self._sent_hello or self.done:
            raise HandshakeError("handshake message out of turn")
        if self._session:
            _open(data, _ACCEPT).end()
            self.done = True
            self.session = self._session
            return b""
        reader = _open(data, _CHALLENGE)
        nonce_l = reader.take(NONCE_BYTES)
        proof_l = reader.take(_MAC_BYTES)
        reader.end()
        transcript = _transcript(self.group, self.self_id, self.peer_id, self._nonce, nonce_l)
        if not hmac.compare_digest(proof_l, _mac(self._secret, b"listener", transcript)):
            raise HandshakeError(f"{self.peer_id} did not prove the group secret (do both nodes have the same one?)")
        self._session = _mac(self._secret, b"session", transcript)
        return _message(_PROOF, _mac(self._secret, b"dialler", transcript))


class Listener:
    """The side that accepts: `receive(hello)` returns the CHALLENGE, `receive(proof)` the ACCEPT (then done).

    `peer_id` is the dialler's id, authenticated once `done`."""

    def __init__(self, secret: bytes, group: str, self_id: str, nonce: bytes) -> None:
        _check_secret(secret)
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
        self._secret = secret
        self.group, self.self_id = group, self_id
        self._nonce = nonce
        self._transcript: bytes | None = None
        self.peer_id = ""
        self.done = False
        self.session = b""

    def receive(self, data: bytes) -> bytes:
        if self.done:
            raise HandshakeError("handshake message after the handshake ended")
        if self._transcript is None:
            return self._hello(data)
        return self._proof(data)

    def _hello(self, data: bytes) -> bytes:
        reader = _open(data, _HELLO)
        group, dialler, listener = reader.text(), reader.text(), reader.text()
        nonce_d = reader.take(NONCE_BYTES)
        reader.end()
        if group != self.group:
            raise HandshakeError(f"a dialler of group {group!r} reached group {self.group!r}")
        if listener != self.self_id:
            raise HandshakeError(f"a dialler for {listener!r} reached {self.self_id!r}")
        if dialler == self.self_id or not dialler:
            raise HandshakeError(f"a dialler claimed this node's own id {dialler!r}")
        self.peer_id = dialler
        self._transcript = _transcript(group, dialler, listener, nonce_d, self._nonce)
        return _message(_CHALLENGE, self._nonce + _mac(self._secret, b"listener", self._transcript))

    def _proof(self, data: bytes) -> bytes:
        assert self._transcript is not None
        reader = _open(data, _PROOF)
        proof_d = reader.take(_MAC_BYTES)
        reader.end()
        if not hmac.compare_digest(proof_d, _mac(self._secret, b"dialler", self._transcript)):
            raise HandshakeError(f"{self.peer_id!r} did not prove the group secret (do both nodes have the same one?)")
        self.done = True
        self.session = _mac(self._secret, b"session", self._transcript)
        return _message(_ACCEPT, b"")
