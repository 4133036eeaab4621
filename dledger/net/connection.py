"""One framed connection on an asyncio Protocol (no StreamReader/StreamWriter): the I/O half under a
sans-I/O frame decoder.

`FrameConnection` feeds every received chunk to its decoder and hands the decoded frames to `on_frames`
in the same callback (no task, no queue); `write(parts)` hands a list of byte strings to the transport in
one `writelines` (one writev where the loop supports it); `pause_writing` / `resume_writing` from the
transport flip `writable`, and `on_writable` runs when the buffer drained below the low-water mark, so a
sender keeps its own bounded outbox instead of growing the transport's buffer without limit. `on_data`, when
set, runs for every chunk received (before decoding): a sign of life even while a long frame is incomplete.

Invariants:
- a decoder error (`FrameError`: garbage, a length out of bounds, a wrong version) or an error raised by
  `on_frames` for a malformed frame closes this connection with one logged line, naming the peer and the
  reason; nothing is raised into the event loop and nothing else is affected;
- after `connection_lost` (or `abort`) nothing more is delivered and `write` is a no-op; `closed` is done;
- the connection works on any asyncio loop (uvloop's too): it uses only the Protocol and Transport API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, cast

from dledger.net.framing import FrameError

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
        self.writable = True
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
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.on_writable is not None:
            self.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable = False
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    # ---- ours ----
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closed.done() and not self.transport.is_closing()

    def write(self, parts: Sequence[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(parts)

    def fail(self, reason: str, level: int = logging.WARNING) -> None:
        """Close the connection because of `reason` (logged once, with the peer's address)."""
        if self.failure or self.transport is None:
            return
        self.failure = reason
        log.log(level, "%s connection %s closed: %s", self.name, self.peer, reason)
        self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
