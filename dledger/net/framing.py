"""Length-prefixed framing over a byte stream (sans-I/O): the layer the peer transport and RocketMQ's
remoting protocol share.

A frame on the wire is a 4-byte big-endian unsigned length `n` followed by `n` bytes of payload; the length
does not count itself (RocketMQ's remoting frames have exactly this outer shape: what follows the length is
its header-length word, header and body). `FrameDecoder.feed` takes whatever bytes a socket delivered and
returns the payloads of every frame they complete, in order.

Invariants:
- A length above `max_frame` (or below `min_frame`) raises `FrameError` as soon as its 4 bytes have
  arrived, before any buffer for the payload is allocated; a decoder that raised stays failed (every later
  `feed` raises the same error), so a transport closes the connection instead of resynchronising on garbage.
- Splitting the same byte stream into chunks differently never changes the frames returned.
- `FrameError` is the only exception `feed` raises; its message is one line, safe to log.
- The decoder holds at most one incomplete frame (at most `max_frame + 4` bytes) between calls.
"""

from __future__ import annotations

import struct

__all__ = ["LENGTH", "FrameDecoder", "FrameError", "encode_frame"]

LENGTH = struct.Struct(">I")
_LEN = LENGTH.size


class FrameError(Exception):
    """The stream is not well framed (a length out of bounds); the connection should be closed."""


def encode_frame(payload: bytes) -> bytes:
    """One frame: the payload's length, then the payload."""
    return LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frame payloads; see the module docstring for the guarantees.

    A payload longer than `LARGE` that arrives in pieces is collected as a list of its pieces and joined
    once when complete: appending each piece to one buffer would copy the buffer again and again (a 4 MiB
    peer batch in 64 KiB reads cost tens of copies of itself)."""

    __slots__ = ("_buf", "_error", "_have", "_max", "_min", "_need", "_parts")

    LARGE = 1 << 16

    def __init__(self, max_frame: int, min_frame: int = 0) -> None:
        if not 0 <= min_frame <= max_frame < 2**32:
            raise ValueError(f"frame bounds must satisfy 0 <= min <= max < 2^32, got {min_frame}, {max_frame}")
        self._max = max_frame
        self._min = min_frame
        self._buf = bytearray()
        self._need = -1  # payload length of the frame being read, -1 while its length is incomplete
        self._parts: list[bytes] = []  # the pieces of a large payload being collected (then `_buf` is empty)
        self._have = 0  # bytes in `_parts`
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf) + self._have

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Every frame payload that `data` completes, in stream order."""
        if self._error is not None:
            raise self._error
        frames: list[bytes] = []
        if self._parts:
            missing = self._need - self._have
            if len(data) < missing:
                self._parts.append(bytes(data))
                self._have += len(data)
                return frames
            self._parts.append(bytes(data[:missing]))
            frames.append(b"".join(self._parts))
            self._parts = []
            self._have = 0
            self._need = -1
            data = data[missing:]
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while True:
            if self._need < 0:
                if end - pos < _LEN:
                    break
                (n,) = LENGTH.unpack_from(buf, pos)
                if n > self._max or n < self._min:
                    self._error = FrameError(f"frame length {n} is outside the allowed {self._min}..{self._max} bytes")
                    buf.clear()
                    raise self._error
                self._need = n
                pos += _LEN
            if end - pos < self._need:
                break
            with memoryview(buf) as view:
                frames.append(bytes(view[pos : pos + self._need]))
            pos += self._need
            self._need = -1
        if self._need > self.LARGE and pos < end:  # a large payload has begun: collect its pieces instead
            with memoryview(buf) as view:
                self._parts.append(bytes(view[pos:end]))
            self._have = end - pos
            buf.clear()
        elif pos:
            del buf[:pos]
        return frames
