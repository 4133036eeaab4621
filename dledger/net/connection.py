"""One framed connection on an asyncio Protocol (no StreamReader/StreamWriter): the I/O half under a
sans-I/O frame decoder.

`FrameConnection` feeds every received chunk to its decoder and hands the decoded frames to `on_frames`
in the same callback (no task, no queue); `write(parts)` hands a list of byte strings to the transport in
one `writelines` (one writev where the loop supports it); `pause_writing` / `resume_writing` from the
transport flip `writable`, and `on_writable` runs when the buffer drained below the low-water mark, so a
sender keeps its own bounded outbox instead of growing the transport's buffer without limit. `on_data`, when
set, runs for every chunk received (before decoding): a sign of life even while a long frame is incomplete.

`offload_writes(threshold)` (plain TCP only, not TLS) hands every write of at least `threshold` bytes to a
`writer.WriteThread`, and any write while that thread still has bytes to write, so that big sends cost the
loop only a queue append; smaller writes, when the thread is idle, still go straight to the transport (the
quick path of a single message). `writable` is then false while either the transport or the thread is above
its high-water mark, and `on_writable` runs when both drained.

Invariants:
- a decoder error (`FrameError`: garbage, a length out of bounds, a wrong version) or an error raised by
  `on_frames` for a malformed frame closes this connection with one logged line, naming the peer and the
  reason; nothing is raised into the event loop and nothing else is affected;
- after `connection_lost` (or `abort`) nothing more is delivered and `write` is a no-op; `closed` is done;
- bytes leave in the order written, whichever path each write took (the thread takes a write only while the
  transport's buffer is empty, the transport only while the thread has nothing left to write);
- the connection works on any asyncio loop (uvloop's too): it uses only the Protocol and Transport API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, cast

from dledger.net.framing import FrameError
from dledger.net.writer import WriteThread

__all__ = ["WRITE_HIGH_WATER", "WRITE_LOW_WATER", "Decoder", "FrameConnection"]

log = logging.getLogger(__name__)

F = TypeVar("F")
WRITE_HIGH_WATER = 4 << 20  # bytes buffered in the transport before it asks us to pause
WRITE_LOW_WATER = 1 << 20


class Decoder(Protocol[F]):
    def feed(self, data: bytes) -> list[F]: ...


class FrameConnection(asyncio.Protocol, Generic[F]):
    """A framed byte stream; see the module docstring. `on_frames(conn, frames)` may call `fail(reason)`."""

    def __init__(
        self,
        decoder: Decoder[F],
        on_frames: Callable[[FrameConnection[F], list[F]], None],
        *,
        on_lost: Callable[[FrameConnection[F]], None] | None = None,
        on_writable: Callable[[], None] | None = None,
        name: str = "peer",
    ) -> None:
        self.decoder = decoder
        self.on_frames = on_frames
        self.on_lost = on_lost
        self.on_writable = on_writable
        self.on_data: Callable[[], None] | None = None
        self.name = name
        self.transport: asyncio.Transport | None = None
        self._transport_paused = False
        self._lost = False
        self._writer: WriteThread | None = None
        self._offload_at = 0
        self.peer = "?"
        self.failure = ""  # why this side closed the connection ("" : it did not)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.closed.done():
            return
        if self.on_data is not None:
            self.on_data()
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            self.fail(f"malformed frame: {exc}")
            return
        if frames:
            self.on_frames(self, frames)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self._transport_paused = True

    def resume_writing(self) -> None:
        self._transport_paused = False
        self._maybe_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._writer is not None:
            self._writer.close()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    # ---- ours ----
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closed.done() and not self.transport.is_closing()

    @property
    def writable(self) -> bool:
        writer = self._writer
        return not (self._lost or self._transport_paused or (writer is not None and writer.above_high_water))

    @property
    def write_thread(self) -> WriteThread | None:
        """The thread that takes the big writes, once `offload_writes` started it."""
        return self._writer

    def _maybe_writable(self) -> None:
        if self.writable and self.on_writable is not None:
            self.on_writable()

    def offload_writes(self, threshold: int) -> bool:
        """Send writes of `threshold` bytes or more from a thread of their own (see the module docstring).
        False (nothing changes) on a TLS connection or one without a socket."""
        transport = self.transport
        if self._writer is not None or transport is None or transport.is_closing():
            return self._writer is not None
        sock = transport.get_extra_info("socket")
        tls = transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None
        if tls or sock is None:
            return False
        self._writer = WriteThread(
            sock.fileno(),
            asyncio.get_running_loop(),
            self._write_failed,
            self._maybe_writable,
            high_water=WRITE_HIGH_WATER,
            low_water=WRITE_LOW_WATER,
            name=f"{self.name} writer",
        )
        self._offload_at = threshold
        return True

    def _write_failed(self, reason: str) -> None:
        """The write thread's error: a peer that went away (reset, broken pipe) closes the connection, as
        the transport's own write error would; logged at INFO, for it is the usual end of a connection."""
        if not self._lost and self.transport is not None and not self.transport.is_closing():
            self.fail(reason, logging.INFO)

    def write(self, parts: Sequence[bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        writer = self._writer
        if writer is not None and (
            writer.pending
            or (sum(len(p) for p in parts) >= self._offload_at and not transport.get_write_buffer_size())
        ):
            writer.submit(parts)
        else:
            transport.writelines(parts)

    def fail(self, reason: str, level: int = logging.WARNING) -> None:
        """Close the connection because of `reason` (logged once, with the peer's address)."""
        if self.failure or self.transport is None:
            return
        self.failure = reason
        log.log(level, "%s connection %s closed: %s", self.name, self.peer, reason)
        self.abort()

    def close(self) -> None:
        """Close once everything written so far is sent (what the thread still holds is dropped: a
        graceful close is for refusals and the end of a handshake, before any write is offloaded)."""
        if self._writer is not None:
            self._writer.close()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.transport is not None:
            self.transport.abort()
