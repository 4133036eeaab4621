"""A small readers-writer lock: many concurrent readers, or one writer; waiting writers go first.

Used by the log so that readers (and the background flusher) never use a file handle that a truncation,
compaction or close is about to close. Appends do not take it: they only add bytes past the published end.
"""

from __future__ import annotations

import threading

__all__ = ["RWLock"]


class RWLock:
    """Readers share, a writer excludes everyone; a waiting writer blocks new readers (no writer starvation)."""

    __slots__ = ("_cond", "_readers", "_waiting", "_writer")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._waiting = 0
        self._writer = False

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()
