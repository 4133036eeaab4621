"""Locks: a small readers-writer lock inside a process, and the store's exclusive lock across processes.

`RWLock`: many concurrent readers, or one writer; waiting writers go first. The log uses it so that readers
(and the background flusher) never use a file handle that a truncation, compaction or close is about to
close. Appends do not take it: they only add bytes past the published end.

`lock_store`: an exclusive, non-blocking flock on the store's `LOCK` file, held while a log is open, so
that two writers never share a store (the read-only `verify` / `dump` tools do not take it).
"""

from __future__ import annotations

import fcntl
import os
import threading

from dledger.commitlog.errors import StoreInUseError
from dledger.commitlog.fileops import FILE_MODE

__all__ = ["LOCK_NAME", "RWLock", "lock_store"]

LOCK_NAME = "LOCK"


def lock_store(path: str) -> int:
    """Take the store's exclusive lock; returns the fd to close to release it."""
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUseError(f"{path} is already open (by this or another process)") from None
    return fd


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
