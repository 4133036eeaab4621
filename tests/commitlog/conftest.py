"""Shared helpers for the commit log tests: entry builders, a fault-injecting FileOps, store paths."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
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

    def drop_cache(self, fd: int, offset: int, length: int) -> None:
        self.drops += 1  # the pages were never synced: evicting them would start their writeback


class PowerLossOps(FileOps):
    """FileOps that models strict power loss, independently of the log's own bookkeeping.

    A file survives a power cut only with the content it had at its last fdatasync through these ops (a file
    never synced survives empty); a directory keeps only the names it had at its last `fsync_dir` (a file
    created or removed since then reverts). `crash_image(dst)` materializes exactly that. A sync counts only
    when `FileOps.datasync` / `fsync_dir` really ran (its counter moved): a run with those disabled (the
    reviewer's `plug_nofsync`) therefore loses everything, as it would on real hardware. The system calls
    themselves are skipped unless `real_syncs`: the model, not the disk, decides what survives.

    Files in the store directory itself (meta, checkpoint) survive if the directory's last fsync named them:
    meta (written atomically with its own fsyncs) with its current content; the checkpoint, a hint rewritten in
    place, with its content at its last fdatasync (the oldest a power cut can leave), or not at all.
    `fail(kind, path)` may return an errno to inject a failure of `pwrite`, `datasync`, `fsync_dir`, `replace`
    or `truncate`.
    """

    def __init__(self, root: str | os.PathLike[str], *, real_syncs: bool = False) -> None:
        super().__init__()
        self.real_syncs = real_syncs  # the model needs no real fsync (and the disk is shared with other runs)
        self.root = os.path.realpath(root)
        self.paths: dict[int, str] = {}
        self.content: dict[str, bytes] = {}  # path -> bytes as of its last fdatasync
        self.dirs: dict[str, set[str]] = {}  # directory -> names as of its last fsync_dir
        self.fail: Callable[[str, str], int | None] = lambda kind, path: None

    def drop_cache(self, fd: int, offset: int, length: int) -> None:
        self.drops += 1  # the model's syncs are not real: see NoSyncOps

    def _inject(self, kind: str, path: str) -> None:
        err = self.fail(kind, path)
        if err:
            raise OSError(err, os.strerror(err))

    def mark_all_durable(self) -> None:
        """Declare the store's current files and directories durable (e.g. a store built before the test)."""
        self.dirs[self.root] = set(os.listdir(self.root))
        for sub in ("data", "index"):
            d = os.path.join(self.root, sub)
            if not os.path.isdir(d):
                continue
            self.dirs[d] = set(os.listdir(d))
            for n in self.dirs[d]:
                with open(os.path.join(d, n), "rb") as f:
                    self.content[os.path.join(d, n)] = f.read()

    def _fdatasync(self, fd: int) -> None:
        if self.real_syncs:
            super()._fdatasync(fd)

    def _fsync(self, fd: int) -> None:
        if self.real_syncs:
            super()._fsync(fd)

    def open(self, path: str, *, create: bool) -> int:
        if create and not os.path.exists(path):  # a new inode: nothing of it is durable yet, whatever the name
            self.content[os.path.realpath(path)] = b""  # held before (a removed file's durable bytes are gone)
        fd = super().open(path, create=create)
        self.paths[fd] = os.path.realpath(path)
        return fd

    def close(self, fd: int) -> None:
        self.paths.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        self._inject("pwrite", self.paths.get(fd, ""))
        super().pwrite(fd, data, offset)

    def truncate(self, fd: int, length: int) -> None:
        self._inject("truncate", self.paths.get(fd, ""))
        super().truncate(fd, length)

    def datasync(self, fd: int) -> None:
        path = self.paths.get(fd) or os.readlink(f"/proc/self/fd/{fd}")
        self._inject("datasync", path)
        before = self.syncs
        super().datasync(fd)
        if self.syncs > before and path.startswith(self.root + os.sep):
            with open(path, "rb") as f:  # (fd may be write-only)
                self.content[path] = f.read()

    def fsync_dir(self, path: str) -> None:
        self._inject("fsync_dir", os.path.realpath(path))
        before = self.syncs
        super().fsync_dir(path)
        if self.syncs > before:
            self.dirs[os.path.realpath(path)] = set(os.listdir(path))

    def replace(self, src: str, dst: str) -> None:
        self._inject("replace", os.path.realpath(dst))
        super().replace(src, dst)
        real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
        if real_src in self.content:  # the inode moves: its durable bytes go with it (its name is new, though)
            self.content[real_dst] = self.content.pop(real_src)

    def crash_image(self, dst: str | os.PathLike[str]) -> None:
        """Write to `dst` the store as a power cut right now would leave it."""
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        names = self.dirs.get(self.root, set())  # the store directory's entries as of its last fsync
        for name in names:
            src = os.path.join(self.root, name)
            if os.path.isfile(src) and name != "LOCK":
                if name == "checkpoint":  # rewritten in place, rarely fsynced: the worst case is its synced copy
                    if src in self.content:
                        with open(os.path.join(dst, name), "wb") as f:
                            f.write(self.content[src])
                else:
                    shutil.copy(src, os.path.join(dst, name))
        for sub in ("data", "index"):
            d = os.path.join(self.root, sub)
            if sub not in names:
                continue  # the directory itself was never made durable: everything in it is gone
            os.makedirs(os.path.join(dst, sub))
            for n in self.dirs.get(d, set()):
                with open(os.path.join(dst, sub, n), "wb") as f:
                    f.write(self.content.get(os.path.join(d, n), b""))
