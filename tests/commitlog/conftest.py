"""Shared helpers for the commit log tests: entry builders, a fault-injecting FileOps, store paths."""

from __future__ import annotations

import errno
import os
import pathlib
from collections.abc import Callable

from dledger.commitlog import Entry, EntryKind, FileOps

KINDS = list(EntryKind)


def entry(i: int, term: int = 1, size: int | None = None) -> Entry:
    """Entry i with data that names it (so a misplaced body is caught) of `size` bytes (default varies)."""
    n = size if size is not None else 5 + (i * 7) % 40
    data = (f"<{i}>".encode() * (n // 3 + 1))[:n]
    return Entry(i, term, data, KINDS[i % len(KINDS)])


def entries(lo: int, hi: int, term: int = 1, size: int | None = None) -> list[Entry]:
    return [entry(i, term, size) for i in range(lo, hi)]


def data_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted((directory / "data").iterdir())


def index_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted((directory / "index").iterdir())


class FaultyOps(FileOps):
    """FileOps that raises `OSError(err)` from the write path when `fail(kind, fd, data)` says so."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: Callable[[str, int], bool] = lambda kind, n: False
        self.err = errno.ENOSPC
        self.paths: dict[int, str] = {}

    def open(self, path: str, *, create: bool) -> int:
        fd = super().open(path, create=create)
        self.paths[fd] = path
        return fd

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        kind = "index" if os.sep + "index" + os.sep in self.paths.get(fd, "") else "data"
        if self.fail(kind, len(data)):
            # a real full disk may write part of the buffer first: do that, then fail
            half = memoryview(data)[: len(data) // 2]
            super().pwrite(fd, half, offset)
            raise OSError(self.err, os.strerror(self.err))
        super().pwrite(fd, data, offset)


class NoSyncOps(FileOps):
    """FileOps that count fsyncs without doing them: for tests of logic (their "crashes" edit files after close)
    on a machine whose disk is shared with other test runs."""

    def datasync(self, fd: int) -> None:
        self.syncs += 1

    def fsync_dir(self, path: str) -> None:
        self.syncs += 1
