"""`SnapshotStore`: state machine snapshots as checksummed files in one directory (format in `snapfile.py`).

Files are named `snapshot-<index>-<term>.snap`, both numbers zero-padded to 20 digits, so names sort by index.
A local snapshot is written through `create(meta)` into `<name>.<unique>.tmp`; a received one (InstallSnapshot,
see `snaptransfer.py`) into `<name>.partial`. Either becomes visible only by `commit` / `finish`: data
fdatasynced, renamed to its final name, directory fsynced. So a visible snapshot is always whole and durable,
and a crash at any point leaves either no new snapshot or the whole one.

Opening the store removes stale `.tmp` files (a crash mid-write: nothing to resume) and `.partial` files at or
below the newest snapshot (useless); a newer `.partial` is kept so that a transfer can resume after a restart.
After each commit the store keeps the newest `keep` snapshots (by index, then term) and deletes the others.

Reading: `latest()` / `list()` read and check headers only (header CRC, name agrees with header); `open(meta)`
checks the whole file's CRC before returning a reader, and the reader checks it again as the body streams
by. Every check failure raises `SnapshotCorruptError`; nothing is ever skipped or guessed around (a damaged
visible snapshot needs an operator: move it away).

Threads: `create`, `receive` and the writers and receivers they return belong to one thread at a time (the node's
driver); `latest`, `list`, `open`, `iter_chunks` and readers may be used from any thread. A pruned snapshot
that is open for reading stays readable (POSIX unlink semantics).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import itertools
import os
import re
import threading
import zlib
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from dledger.commitlog.crc import body_crc
from dledger.commitlog.errors import SnapshotCorruptError, SnapshotNotFoundError
from dledger.commitlog.fileops import DIR_MODE, FileOps
from dledger.commitlog.snapfile import (
    READ_CHUNK,
    TRAILER,
    Header,
    check_meta,
    crc_extend,
    encode_header,
    header_size,
    parse_header,
    verify_file,
)
from dledger.commitlog.snaptransfer import SnapshotChunks, SnapshotReceiver
from dledger.storage_api import SnapshotMeta

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["SnapshotReader", "SnapshotStore", "SnapshotWriter", "snapshot_name"]

_WRITE_BUFFER = 1 << 20
_RETRIES = 3  # listing races with a concurrent commit's pruning
_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")
_TEMP = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap\.(?:[0-9a-z-]+\.tmp|partial)$")
_unique = itertools.count()


def snapshot_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term:020d}.snap"


class SnapshotStore:
    """Snapshots in `directory` (created if missing); `keep` (>= 1) newest ones are kept after each commit.

    `file_ops` is a test seam (fault injection, power-loss models); leave it None.
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 2, *, file_ops: FileOps | None = None) -> None:
        if type(keep) is not int or keep < 1:
            raise ValueError(f"keep must be an int >= 1, not {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self._ops = file_ops or FileOps()
        self._lock = threading.Lock()  # publishing and pruning
        self._receiver: SnapshotReceiver | None = None
        self.directory.mkdir(DIR_MODE, parents=True, exist_ok=True)
        entries = self._entries()
        newest = entries[-1][:2] if entries else None
        for name in os.listdir(self.directory):
            m = _TEMP.match(name)
            if m is None:
                continue
            if name.endswith(".partial") and (newest is None or (int(m[1]), int(m[2])) > newest):
                continue  # a transfer that may resume
            self._ops.remove(str(self.directory / name))
        self._ops.fsync_dir(str(self.directory))  # the removals, if any

    # --- reading -----------------------------------------------------------------------------------------

    def _entries(self) -> builtins.list[tuple[int, int, str]]:
        """`(index, term, name)` of every visible snapshot, oldest first (from names only)."""
        out = [(int(m[1]), int(m[2]), n) for n in os.listdir(self.directory) if (m := _NAME.match(n))]
        return sorted(out)

    def _open_checked(self, path: Path) -> tuple[int, Header]:
        """An open fd on the snapshot file at `path` and its checked header (which must agree with the name)."""
        try:
            fd = self._ops.open_readonly(str(path))
        except FileNotFoundError:
            raise SnapshotNotFoundError(f"{path}: no such snapshot (pruned?)") from None
        try:
            header = parse_header(lambda off, n: self._ops.pread(fd, n, off), self._ops.size(fd), str(path))
            if snapshot_name(header.meta.index, header.meta.term) != path.name:
                raise SnapshotCorruptError(
                    f"{path}: the header says index {header.meta.index}, term {header.meta.term}"
                )
        except BaseException:
            self._ops.close(fd)
            raise
        return fd, header

    def _meta(self, name: str) -> SnapshotMeta:
        fd, header = self._open_checked(self.directory / name)
        self._ops.close(fd)
        return header.meta

    def list(self) -> builtins.list[SnapshotMeta]:
        """Every stored snapshot's meta, oldest first (headers checked)."""
        for attempt in range(_RETRIES):
            try:
                return [self._meta(name) for _i, _t, name in self._entries()]
            except SnapshotNotFoundError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def latest(self) -> SnapshotMeta | None:
        """The newest snapshot's meta (its header checked), or None when there is none."""
        for attempt in range(_RETRIES):
            entries = self._entries()
            try:
                return self._meta(entries[-1][2]) if entries else None
            except SnapshotNotFoundError:  # pruned by a concurrent commit: look again
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def path_of(self, meta: SnapshotMeta) -> Path:
        return self.directory / snapshot_name(meta.index, meta.term)

    def open(self, meta: SnapshotMeta, *, verify: bool = True) -> SnapshotReader:
        """A reader over the body of the snapshot `meta`. With `verify` (the default) the whole file's CRC is
        checked first, so a state machine never starts restoring from a damaged image."""
        check_meta(meta)
        path = self.path_of(meta)
        fd, header = self._open_checked(path)
        try:
            if header.meta != meta:
                raise SnapshotCorruptError(f"{path}: its membership config differs from the one asked for")
            if verify:
                verify_file(self._ops, fd, header, str(path))
            return SnapshotReader(_BodyRaw(self._ops, fd, header, str(path)), header)
        except BaseException:
            self._ops.close(fd)
            raise

    def iter_chunks(self, meta: SnapshotMeta, chunk_size: int = 1 << 20, start: int = 0) -> SnapshotChunks:
        """The raw file of snapshot `meta` in chunks `(offset, data, crc32(data))` from byte `start`, for an
        InstallSnapshot sender; `.total_size` and `.file_crc` are what the receiver needs (see `snaptransfer`)."""
        check_meta(meta)
        return SnapshotChunks(self._ops, str(self.path_of(meta)), meta, chunk_size, start)

    # --- writing -----------------------------------------------------------------------------------------

    def create(self, meta: SnapshotMeta) -> SnapshotWriter:
        """A writer for a new local snapshot of `meta`; nothing is visible before its `commit()`."""
        check_meta(meta)
        tmp = self.path_of(meta).with_name(f"{snapshot_name(meta.index, meta.term)}.{os.getpid()}-{next(_unique)}.tmp")
        return SnapshotWriter(self, meta, tmp)

    def receive(self, meta: SnapshotMeta, total_size: int) -> SnapshotReceiver:
        """A receiver for the snapshot `meta` sent as a `total_size`-byte file in chunks (see `snaptransfer`).

        Resumes the partial file of an earlier transfer of the same snapshot (check `next_offset`); removes the
        partial files of other ones, and supersedes any receiver still open (its writes then fail)."""
        check_meta(meta)
        partial = self.path_of(meta).with_name(snapshot_name(meta.index, meta.term) + ".partial")
        with self._lock:
            if self._receiver is not None:
                self._receiver.close()
                self._receiver = None
            for name in os.listdir(self.directory):
                if name.endswith(".partial") and name != partial.name and _TEMP.match(name):
                    self._ops.remove(str(self.directory / name))
            receiver = SnapshotReceiver(self._ops, partial, meta, total_size, self._publish)
            self._receiver = receiver
            return receiver

    def _publish(self, tmp: Path, meta: SnapshotMeta) -> None:
        """Make the fdatasynced file `tmp` the visible snapshot `meta` (rename, directory fsync), then prune."""
        with self._lock:
            self._ops.replace(str(tmp), str(self.path_of(meta)))
            self._ops.fsync_dir(str(self.directory))
            entries = self._entries()
            for _i, _t, name in entries[: max(0, len(entries) - self.keep)]:
                self._ops.remove(str(self.directory / name))
            if len(entries) > self.keep:
                self._ops.fsync_dir(str(self.directory))

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.directory)!r}, keep={self.keep})"


class SnapshotWriter(io.BufferedIOBase):
    """A binary file object for the state machine to write a snapshot body into.

    `commit()` makes it durable and visible; leaving a `with` block without `commit()` (by an exception or not),
    `abort()` and `close()` remove it, so nothing partial is ever visible.
    """

    def __init__(self, store: SnapshotStore, meta: SnapshotMeta, tmp: Path) -> None:
        super().__init__()
        self.meta = meta
        self._store = store
        self._ops = store._ops
        self._tmp = tmp
        self._head_len = header_size(len(meta.config))
        self._pos = self._head_len  # the body goes after the header, which is written last
        self._crc = 0  # of the body
        self._buf = bytearray()
        self._done = False
        self._fd: int | None = self._ops.open(str(tmp), create=True)

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        if self._done or self._fd is None:
            raise ValueError("write to a committed or aborted snapshot")
        view = memoryview(data).cast("B")
        self._crc = body_crc(view, self._crc)
        self._buf += view
        if len(self._buf) >= _WRITE_BUFFER:
            self._drain()
        return len(view)

    def _drain(self) -> None:
        assert self._fd is not None
        if self._buf:
            self._ops.pwrite(self._fd, self._buf, self._pos)
            self._pos += len(self._buf)
            self._buf.clear()

    @property
    def body_len(self) -> int:
        return self._pos - self._head_len + len(self._buf)

    def commit(self) -> SnapshotMeta:
        """Write the header and trailer, fdatasync, rename into place, fsync the directory, prune.

        If it raises before the rename nothing is visible; a failure after it (the directory fsync) may leave
        the snapshot visible but not known durable: the caller must not rely on it."""
        if self._done or self._fd is None:
            raise ValueError("commit of a committed or aborted snapshot")
        try:
            self._drain()
            body_len = self._pos - self._head_len
            header = encode_header(self.meta, body_len)
            file_crc = crc_extend(zlib.crc32(header), self._crc, body_len)
            self._ops.pwrite(self._fd, TRAILER.pack(file_crc), self._pos)
            self._ops.pwrite(self._fd, header, 0)
            self._ops.datasync(self._fd)
            self._close_fd()
            self._store._publish(self._tmp, self.meta)
        except BaseException:
            self.abort()
            raise
        self._done = True
        super().close()
        return self.meta

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._ops.close(fd)

    def abort(self) -> None:
        """Drop the snapshot being written (idempotent; a no-op after `commit`)."""
        if self._done:
            return
        self._done = True
        try:
            self._close_fd()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._ops.remove(str(self._tmp))
            super().close()

    def close(self) -> None:
        self.abort()

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class _BodyRaw(io.RawIOBase):
    """Sequential reads of a snapshot body; at its end, checks the file CRC of what was read."""

    def __init__(self, ops: FileOps, fd: int, header: Header, where: str) -> None:
        super().__init__()
        self._ops, self._fd, self._where = ops, fd, where
        self._off = header.size
        self._end = header.size + header.body_len
        self._crc = zlib.crc32(encode_header(header.meta, header.body_len))
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._end - self._off)
        if n <= 0:
            self._check()
            return 0
        data = self._ops.pread(self._fd, n, self._off)
        if len(data) < n:
            raise SnapshotCorruptError(f"{self._where}: truncated at byte {self._off + len(data)}")
        view[:n] = data
        self._crc = body_crc(data, self._crc)
        self._off += n
        if self._off == self._end:
            self._check()
        return n

    def _check(self) -> None:
        if self._checked:
            return
        (stored,) = TRAILER.unpack(self._ops.pread(self._fd, TRAILER.size, self._end).ljust(TRAILER.size, b"\0"))
        if stored != self._crc:
            raise SnapshotCorruptError(f"{self._where}: the body read fails the file CRC")
        self._checked = True

    def close(self) -> None:
        if not self.closed:
            try:
                self._ops.close(self._fd)
            finally:
                super().close()


class SnapshotReader(io.BufferedReader):
    """A buffered binary file object over a snapshot's body; `meta` and `size` (body bytes) describe it.

    Reading to the end checks the file CRC once more; a mismatch raises `SnapshotCorruptError`."""

    def __init__(self, raw: _BodyRaw, header: Header) -> None:
        super().__init__(raw, READ_CHUNK)
        self.meta = header.meta
        self.size = header.body_len
