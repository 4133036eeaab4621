"""InstallSnapshot transfer over snapshot files: the sender's chunk reader and the receiver's chunk writer.

What travels is the snapshot file itself (header, body, trailer: `snapfile.py`), cut into chunks. The sender
(`SnapshotChunks`, from `SnapshotStore.iter_chunks`) announces the meta, `total_size` (the file's length) and
`file_crc` (the file's trailer: crc32 of everything before it), then sends `(offset, data, crc32(data))`.
Starting from offset 0 it also checks the file CRC as it reads, and refuses to send the last chunk of a damaged
file (`SnapshotCorruptError`).

The receiver (`SnapshotReceiver`, from `SnapshotStore.receive`) writes into `<name>.partial` and refuses, with
nothing written:
- a chunk that does not start at `next_offset` (a gap, a duplicate, a reordering): `SnapshotOffsetError`,
  whose `expected` is the offset the sender must resume from;
- a chunk whose CRC does not match, or that runs past `total_size`: `SnapshotTransferError`;
- header bytes that differ from the header the announced meta and size imply (the receiver knows it in
  advance): `SnapshotTransferError`, at the first chunk.
`finish(file_crc)` needs every byte, re-reads the file from disk (header checks, CRC of everything before the
trailer, which must equal both `file_crc` and the trailer), fdatasyncs it and publishes it like a local
snapshot. If that check fails the partial file is deleted (the next transfer starts from 0) and
`SnapshotCorruptError` is raised.

Resuming: `close()` (and leaving a `with` block, even by an exception) keeps the partial file; receiving the
same meta and size again, even after a restart, resumes at its length (`next_offset`) when its bytes so far
agree with the expected header; otherwise it starts over. The partial file is not fsynced while receiving (a
power cut may leave garbage in its tail): `finish`'s check on the bytes on disk is what makes that safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from dledger.commitlog.crc import body_crc
from dledger.commitlog.errors import (
    SnapshotCorruptError,
    SnapshotNotFoundError,
    SnapshotOffsetError,
    SnapshotTransferError,
)
from dledger.commitlog.fileops import FileOps
from dledger.commitlog.snapfile import TRAILER, encode_header, header_size, parse_header, verify_file
from dledger.storage_api import SnapshotMeta

__all__ = ["Chunk", "SnapshotChunks", "SnapshotReceiver"]

Chunk = tuple[int, bytes, int]  # (offset in the file, data, crc32(data))


class SnapshotChunks:
    """An iterator of the chunks of a snapshot file from byte `start`; `meta`, `total_size`, `file_crc` describe
    the file. Close it (or use it as a context manager) when a transfer stops early."""

    def __init__(self, ops: FileOps, path: str, meta: SnapshotMeta, chunk_size: int, start: int) -> None:
        if type(chunk_size) is not int or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, not {chunk_size!r}")
        self._ops = ops
        self._path = path
        try:
            fd = ops.open_readonly(path)
        except FileNotFoundError:
            raise SnapshotNotFoundError(f"{path}: no such snapshot (pruned?)") from None
        self._fd: int | None = fd
        try:
            header = parse_header(lambda off, n: ops.pread(fd, n, off), ops.size(fd), path)
            if header.meta != meta:
                raise SnapshotCorruptError(f"{path}: holds {header.meta}, not the {meta} asked for")
            if type(start) is not int or not 0 <= start <= header.total:
                raise ValueError(f"start must be an int in [0, {header.total}], not {start!r}")
            (self.file_crc,) = TRAILER.unpack(ops.pread(fd, TRAILER.size, header.total - TRAILER.size))
        except BaseException:
            self.close()
            raise
        self.meta = meta
        self.total_size = header.total
        self._chunk = chunk_size
        self._off = start
        self._crc: int | None = 0 if start == 0 else None  # checked as it goes when the whole file is read

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        if self._fd is None or self._off >= self.total_size:
            self.close()
            raise StopIteration
        off = self._off
        data = self._ops.pread(self._fd, min(self._chunk, self.total_size - off), off)
        if not data:
            self.close()
            raise SnapshotCorruptError(f"{self._path}: truncated at byte {off}")
        if self._crc is not None:
            end = self.total_size - TRAILER.size  # the CRC covers the bytes before the trailer
            self._crc = body_crc(data[: max(0, end - off)], self._crc)
            if off + len(data) >= end and self._crc != self.file_crc:
                self.close()
                raise SnapshotCorruptError(f"{self._path}: the file fails its CRC; not sending it")
        self._off = off + len(data)
        return off, data, body_crc(data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._ops.close(fd)

    def __enter__(self) -> SnapshotChunks:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SnapshotReceiver:
    """Writes the chunks of one incoming snapshot file; see the module docstring for the rules."""

    def __init__(
        self,
        ops: FileOps,
        path: Path,
        meta: SnapshotMeta,
        total_size: int,
        publish: Callable[[Path, SnapshotMeta], None],
    ) -> None:
        least = header_size(len(meta.config)) + TRAILER.size
        if type(total_size) is not int or total_size < least:
            raise SnapshotTransferError(f"a snapshot of {meta} is at least {least} bytes, not {total_size!r}")
        self.meta = meta
        self.total_size = total_size
        self._ops = ops
        self._path = path
        self._publish = publish
        self._header = encode_header(meta, total_size - least)
        self._fd: int | None = ops.open(str(path), create=True)
        try:
            size = ops.size(self._fd)
            head = min(size, len(self._header))
            if size > total_size or ops.pread(self._fd, head, 0) != self._header[:head]:
                ops.truncate(self._fd, 0)  # another transfer's bytes: start over
                size = 0
        except BaseException:
            self.close()
            raise
        self.next_offset = size
        self.resumed_from = size

    def _live(self) -> int:
        if self._fd is None:
            raise SnapshotTransferError(
                f"the receiver of {self.meta} is closed, finished or superseded; call receive() again to resume"
            )
        return self._fd

    def write_chunk(self, offset: int, data: bytes, chunk_crc: int) -> None:
        """Write the chunk at `offset` (which must be `next_offset`), after checking it."""
        fd = self._live()
        if offset != self.next_offset:
            raise SnapshotOffsetError(f"chunk at offset {offset} of {self.meta} refused", self.next_offset)
        if body_crc(data) != chunk_crc:
            raise SnapshotTransferError(f"chunk at offset {offset} of {self.meta} fails its CRC")
        end = offset + len(data)
        if end > self.total_size:
            raise SnapshotTransferError(f"chunk at offset {offset} ends at {end}, past the size {self.total_size}")
        if offset < len(self._header) and data[: len(self._header) - offset] != self._header[offset:end]:
            raise SnapshotTransferError(
                f"chunk at offset {offset}: the file's header disagrees with the announced {self.meta} and size"
            )
        self._ops.pwrite(fd, data, offset)
        self.next_offset = end

    def finish(self, file_crc: int) -> SnapshotMeta:
        """Check the received file against `file_crc`, make it durable and visible; returns its meta."""
        fd = self._live()
        if self.next_offset != self.total_size:
            raise SnapshotOffsetError(f"finish of {self.meta} before its last byte", self.next_offset)
        where = str(self._path)
        try:
            header = parse_header(lambda off, n: self._ops.pread(fd, n, off), self._ops.size(fd), where)
            if header.meta != self.meta:
                raise SnapshotCorruptError(f"{where}: holds {header.meta}, not the announced {self.meta}")
            crc = verify_file(self._ops, fd, header, where)
            if crc != file_crc:
                raise SnapshotCorruptError(f"{where}: the sender's file CRC {file_crc:#010x} is not the file's")
        except SnapshotCorruptError:
            self.abort()
            raise
        self._ops.datasync(fd)
        self.close()
        self._publish(self._path, self.meta)
        return self.meta

    def close(self) -> None:
        """Stop receiving; the partial file stays, so that the transfer can resume."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self._ops.close(fd)

    def abort(self) -> None:
        """Stop receiving and delete the partial file (the next transfer starts from 0)."""
        self.close()
        try:
            self._ops.remove(str(self._path))
        except FileNotFoundError:
            pass

    def __enter__(self) -> SnapshotReceiver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
