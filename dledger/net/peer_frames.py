"""The peer transport's frames (sans-I/O): what travels inside each length-prefixed frame of `framing`.

A frame's payload is a version byte (`VERSION`), a type byte, then the type's body:

    HELLO    dialler -> listener   group, sender id, recipient id (each a length byte and UTF-8 text)
    WELCOME  listener -> dialler   empty: the HELLO was accepted
    AUTH     both ways             one message of the secret handshake (`dledger.net.handshake`), which
                                   names group, sender and recipient itself
    REFUSE   either way            a short UTF-8 reason; the sender closes the connection after it
    BATCH    dialler -> listener   a serialized `PeerBatch` (the protobuf peer messages, as gRPC carries them)
    ACK      listener -> dialler   empty: "I heard you" (the dialler's liveness signal)

A connection opens with HELLO (peer authentication `none` or `tls`) or AUTH (`secret`); once the listener
answered WELCOME (or the handshake's ACCEPT), the dialler sends BATCHes and the listener ACKs some of them.

A BATCH is built as parts (`batch_parts`): the frame's head, then each message's field tag, length and
serialized bytes, where an AppendEntries' entries are the very bytes objects the leader encoded once for all
followers (`codec.to_wire_parts`); the connection writes the parts with one `writelines`, nothing joined.

Invariants: `PeerFrameDecoder.feed` raises only `FrameError` (this module's `PeerFrameError` is one), with a
one-line message; a frame shorter than its two head bytes, of another version or of an unknown type is an
error as soon as it is complete, a length above the limit as soon as its length word arrived (`framing`);
`parse_hello` and `parse_refusal` raise `PeerFrameError` for anything malformed.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from dledger.net.framing import LENGTH, FrameDecoder, FrameError

__all__ = [
    "HEAD_BYTES",
    "MAX_REASON_BYTES",
    "VERSION",
    "Frame",
    "FrameType",
    "PeerFrameDecoder",
    "PeerFrameError",
    "SizedParts",
    "batch_parts",
    "encode",
    "hello_body",
    "parse_hello",
    "parse_refusal",
    "refusal_body",
]

VERSION = 1
HEAD_BYTES = 2  # version, type
MAX_REASON_BYTES = 200
_HEAD = struct.Struct(">BB")
_MESSAGE_TAG = b"\x0a"  # PeerBatch.messages: field 1, length-delimited
_MAX_ID_BYTES = 255


class FrameType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    AUTH = 3
    REFUSE = 4
    BATCH = 5
    ACK = 6


_TYPES = {int(t): t for t in FrameType}


class PeerFrameError(FrameError):
    """A frame that is not a well-formed peer frame; the connection should be closed."""


class Frame(NamedTuple):
    kind: FrameType
    body: memoryview  # a view into the frame's payload (no copy)


class SizedParts(Protocol):
    """A serialized message as parts (`codec.Parts`): `b"".join(parts)` is the message, `size` its length."""

    @property
    def parts(self) -> list[bytes]: ...

    @property
    def size(self) -> int: ...


def encode(kind: FrameType, body: bytes = b"") -> bytes:
    """One whole frame on the wire: length word, version, type, body."""
    return LENGTH.pack(HEAD_BYTES + len(body)) + _HEAD.pack(VERSION, kind) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def batch_parts(messages: Iterable[bytes | SizedParts]) -> tuple[list[bytes], int]:
    """A BATCH frame carrying these serialized `PeerMessage`s, as parts to write in order, and its size on
    the wire. The body is exactly the serialized `PeerBatch` of the messages."""
    body: list[bytes] = []
    size = 0
    for m in messages:
        parts: Sequence[bytes]
        if isinstance(m, bytes):
            n, parts = len(m), (m,)
        else:
            n, parts = m.size, m.parts
        length = _varint(n)
        body += (_MESSAGE_TAG, length, *parts)
        size += 1 + len(length) + n
    head = LENGTH.pack(HEAD_BYTES + size) + _HEAD.pack(VERSION, FrameType.BATCH)
    return [head, *body], len(head) + size


def _check_id(what: str, value: str) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > _MAX_ID_BYTES:
        raise ValueError(f"{what} must have 1..{_MAX_ID_BYTES} bytes")
    return raw


def hello_body(group: str, sender: str, recipient: str) -> bytes:
    fields = (_check_id("group", group), _check_id("sender", sender), _check_id("recipient", recipient))
    return b"".join(bytes([len(raw)]) + raw for raw in fields)


def parse_hello(body: bytes | memoryview) -> tuple[str, str, str]:
    """(group, sender, recipient) of a HELLO body."""
    data = bytes(body)
    out: list[str] = []
    pos = 0
    for _ in range(3):
        if pos >= len(data):
            raise PeerFrameError("HELLO truncated")
        n = data[pos]
        raw = data[pos + 1 : pos + 1 + n]
        if len(raw) != n or not n:
            raise PeerFrameError("HELLO truncated or with an empty field")
        try:
            out.append(raw.decode())
        except UnicodeDecodeError:
            raise PeerFrameError("HELLO carries an id that is not UTF-8") from None
        pos += 1 + n
    if pos != len(data):
        raise PeerFrameError("HELLO has trailing bytes")
    return out[0], out[1], out[2]


def refusal_body(reason: str) -> bytes:
    return reason.encode()[:MAX_REASON_BYTES]


def parse_refusal(body: bytes | memoryview) -> str:
    """A REFUSE's reason, made safe to log on one line."""
    text = bytes(body[:MAX_REASON_BYTES]).decode(errors="replace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class PeerFrameDecoder:
    """Splits a byte stream into peer frames (see the module docstring); a decoder that raised stays failed."""

    __slots__ = ("_error", "_frames")

    def __init__(self, max_body: int) -> None:
        self._frames = FrameDecoder(max_body + HEAD_BYTES, HEAD_BYTES)
        self._error: PeerFrameError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._error is not None:
            raise self._error
        out: list[Frame] = []
        for payload in self._frames.feed(data):
            version, kind = _HEAD.unpack_from(payload)
            if version != VERSION:
                self._error = PeerFrameError(f"peer frame version {version}; this node speaks {VERSION}")
            elif kind not in _TYPES:
                self._error = PeerFrameError(f"peer frame of unknown type {kind}")
            if self._error is not None:
                raise self._error
            out.append(Frame(_TYPES[kind], memoryview(payload)[HEAD_BYTES:]))
        return out
