"""The few file operations the log performs, behind one small object: a seam for fault injection and counting.

`FileOps` is what `SegmentedLog` uses for every read, write, truncate and sync of segment and index files.
Tests substitute a subclass to inject errors (e.g. `OSError(ENOSPC)` from `pwrite`) or to count the bytes
that recovery reads. The counters (`reads`, `bytes_read`, `writes`, `syncs`, `drops`) are plain integers, updated
without a lock: they are instrumentation, exact when one thread does the I/O being measured.

Invariant: `pwrite` writes all of `data` or raises; `pread` returns fewer bytes than asked only at end of file.
Everything the store creates is its owner's only: files `FILE_MODE` (0600), directories `DIR_MODE` (0700); the
process umask still applies, so a stricter one wins.
"""

from __future__ import annotations

import fcntl
import os

__all__ = ["DIR_MODE", "FILE_MODE", "FileOps"]

FILE_MODE = 0o600
DIR_MODE = 0o700

_FADVISE = getattr(os, "posix_fadvise", None)  # not on macOS


class FileOps:
    """Thin wrappers over `os` calls, with counters."""

    def __init__(self) -> None:
        self.reads = 0
        self.bytes_read = 0
        self.writes = 0
        self.syncs = 0
        self.drops = 0

    def open(self, path: str, *, create: bool) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return os.open(path, flags, FILE_MODE)

    def open_appending(self, path: str, *, create: bool) -> int:
        """`open` with `O_APPEND`: every write lands at the end of the file, whatever offset `pwrite` names
        (Linux's rule), so a file cut under its writer is never regrown over a hole: the cut shows as a
        size shorter than what was written."""
        fd = self.open(path, create=create)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
        return fd

    def open_readonly(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self.reads += 1
        if length <= 0:
            return b""
        data = os.pread(fd, length, offset)
        if len(data) < length:  # a short read before EOF is legal: finish it
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(fd, length - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.bytes_read += len(data)
        return data

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        self.writes += 1
        n = os.pwrite(fd, data, offset)
        if n == len(data):
            return
        view = memoryview(data)[n:]  # a short write: finish it (the next call reports the error, if any)
        offset += n
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def drop_cache(self, fd: int, offset: int, length: int) -> None:
        """Advise the kernel to evict these bytes from the page cache (the caller passes durable bytes: clean
        pages). Advice only: where the call is missing (not Linux) or refused, nothing happens."""
        self.drops += 1
        if _FADVISE is not None:
            try:
                _FADVISE(fd, offset, length, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def datasync(self, fd: int) -> None:
        self.syncs += 1
        self._fdatasync(fd)

    def fsync_dir(self, path: str) -> None:
        self.syncs += 1
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # the system calls themselves: a power-loss model that tracks durability by itself may skip them
    def _fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)

    def remove(self, path: str) -> None:
        os.remove(path)

    def replace(self, src: str, dst: str) -> None:
        """Rename `src` over `dst` atomically (durable only once the directory is fsynced)."""
        os.replace(src, dst)
