"""The background flusher: a daemon thread that calls `flush()` every interval until stopped.

Invariant: after `stop()` returns, the thread has exited and will never call `flush()` again. An exception
from `flush()` stops the thread and is kept in `error`, for the log to surface on its next call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dledger.commitlog.errors import CorruptStoreError

__all__ = ["Flusher"]

log = logging.getLogger(__name__)


class Flusher:
    """Runs `flush` every `interval_s` seconds on a daemon thread."""

    def __init__(self, flush: Callable[[], None], interval_s: float, name: str) -> None:
        self._flush = flush
        self._interval = interval_s
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._flush()
            except BaseException as exc:
                self.error = exc
                if isinstance(exc, CorruptStoreError):  # damage under the log (a file deleted or cut): one line
                    log.error("commitlog background flush: %s; the log refuses further writes", exc)
                else:
                    log.exception("commitlog background flush failed; the log refuses further writes")
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
