"""A socket's large writes on a thread of their own: the kernel's work for a big send (on loopback it also
runs the receiving end's TCP processing) happens beside the event loop instead of inside it.

`WriteThread(fd, loop, on_error, on_drained)` owns a duplicate of the connected socket's descriptor (the
descriptor the event loop reads from stays the loop's; closing either never closes the other's, so a
descriptor number can never be reused under a write in flight). `submit(parts)` queues byte strings and
returns at once; the thread writes them in order with `os.writev` (the GIL is released during the system
call), waiting with `poll` while the socket's buffer is full (the descriptor is non-blocking: the event
loop made it so). `pending` counts the bytes submitted and not yet written: it drops only after they are
in the kernel, so `pending == 0` seen from the loop means everything submitted is written, and a write
the loop then makes itself cannot overtake one of the thread's.

Invariants: bytes leave in the order submitted; after an error the thread reports it once through
`on_error(reason)` on the event loop and writes nothing more; `on_drained()` runs on the event loop each
time `pending` falls to `low_water` or below after it was above `high_water`; `close()` ends the thread
(a write blocked on a full buffer gives up within `POLL_SECONDS`) and closes the duplicate descriptor.
"""

from __future__ import annotations

import asyncio
import os
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
        self._cond = threading.Condition()
        self._queue: list[bytes] = []
        self.pending = 0
        self._paused = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def above_high_water(self) -> bool:
        return self.pending > self.high_water

    def submit(self, parts: Sequence[bytes]) -> None:
        """Queue `parts` for writing, in order after everything submitted before."""
        size = sum(len(p) for p in parts)
        with self._cond:
            if self._closed:
                return
            self._queue.extend(parts)
            self.pending += size
            if self.pending > self.high_water:
                self._paused = True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue = []
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the thread ----
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    parts, self._queue = self._queue, []
                size = sum(len(p) for p in parts)
                error = self._write_all(parts)
                with self._cond:
                    self.pending -= size
                    drained = self._paused and self.pending <= self.low_water
                    if drained:
                        self._paused = False
                    if error is not None:
                        self._closed = True
                        self._queue = []
                if error is not None:
                    if error != _CLOSED:  # close() asked for it: nobody needs telling
                        self._call(self._on_error, error)
                    return
                if drained:
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
