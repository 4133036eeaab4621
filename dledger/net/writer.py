"""A socket's large writes on a thread of their own: the kernel's work for a big send (on loopback it also
runs the receiving end's TCP processing) happens beside the event loop instead of inside it.

`WriteThread(fd, loop, on_error, on_drained)` owns a duplicate of the connected socket's descriptor (the
descriptor the event loop reads from stays the loop's; closing either never closes the other's, so a
descriptor number can never be reused under a write in flight). `submit(parts)` puts byte strings on a
`queue.SimpleQueue` (C code: no Python-level lock for the loop to wait on while the thread holds it) and
returns at once; the thread takes everything queued, writes it in order with `os.writev` (the GIL is
released during the system call), waiting with `poll` while the socket's buffer is full (the descriptor is
non-blocking: the event loop made it so). `pending` is the bytes submitted minus the bytes written, two
counters each advanced by one thread only; the written count moves only after the bytes are in the kernel,
so `pending == 0` seen from the loop means everything submitted is written, and a write the loop then
makes itself cannot overtake one of the thread's.

Invariants: bytes leave in the order submitted; after an error the thread reports it once through
`on_error(reason)` on the event loop and writes nothing more; `on_drained()` runs on the event loop each
time `pending` falls to `low_water` or below after it was above `high_water`; `close()` ends the thread
(a write blocked on a full buffer gives up within `POLL_SECONDS`) and closes the duplicate descriptor.
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import threading
from collections.abc import Callable, Sequence

__all__ = ["IOV_MAX", "POLL_SECONDS", "WriteThread"]

IOV_MAX = 512  # byte strings per writev (the system's limit is 1024)
_CLOSED = "closed"
POLL_SECONDS = 0.1  # how long a write blocked on a full socket buffer waits before it looks for close()


class WriteThread:
    """See the module docstring."""

    def __init__(
        self,
        fd: int,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[str], None],
        on_drained: Callable[[], None],
        *,
        high_water: int,
        low_water: int,
        name: str = "peer-writer",
    ) -> None:
        self._fd = os.dup(fd)
        self._loop = loop
        self._on_error = on_error
        self._on_drained = on_drained
        self.high_water = high_water
        self.low_water = low_water
        self._queue: queue.SimpleQueue[Sequence[bytes] | None] = queue.SimpleQueue()
        self._submitted = 0  # bytes; advanced by the loop's thread only
        self._written = 0  # bytes; advanced by the write thread only
        self._pauses = 0  # times a submit went past high water; advanced by the loop's thread only
        self._told = 0  # the pauses the write thread has answered with on_drained; the write thread only
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._submitted - self._written

    @property
    def above_high_water(self) -> bool:
        return self.pending > self.high_water

    def submit(self, parts: Sequence[bytes]) -> None:
        """Queue `parts` for writing, in order after everything submitted before."""
        if self._closed:
            return
        self._submitted += sum(len(p) for p in parts)
        if self.pending > self.high_water:
            self._pauses += 1  # before the put: the thread sees it at the latest after writing these parts
        self._queue.put(parts)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the thread ----
    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                parts: list[bytes] = []
                while item is not None:
                    parts += item
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if item is None or self._closed:
                    return
                size = sum(len(p) for p in parts)
                error = self._write_all(parts)
                if error is not None:
                    self._closed = True
                    if error != _CLOSED:  # close() asked for it: nobody needs telling
                        self._call(self._on_error, error)
                    return
                self._written += size
                pauses = self._pauses
                if pauses != self._told and self.pending <= self.low_water:
                    self._told = pauses
                    self._call(self._on_drained)
        finally:
            os.close(self._fd)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass

    def _write_all(self, parts: list[bytes]) -> str | None:
        """Write every byte of `parts`; the reason on failure (or on close), None when all are written."""
        # many small parts are joined (one copy) so that a big batch costs a few system calls: the thread
        # needs the GIL back after each, which a busy loop thread holds for up to the switch interval
        views: list[bytes | memoryview] = list(parts) if len(parts) <= IOV_MAX else [b"".join(parts)]
        start = 0
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        while start < len(views):
            try:
                n = os.writev(self._fd, views[start : start + IOV_MAX])
            except BlockingIOError:
                while not poller.poll(POLL_SECONDS * 1000):
                    if self._closed:
                        return _CLOSED
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                return f"write failed: {exc.strerror or exc}"
            while n:
                head = views[start]
                if n >= len(head):
                    n -= len(head)
                    start += 1
                else:
                    views[start] = memoryview(head)[n:]
                    n = 0
        return None
