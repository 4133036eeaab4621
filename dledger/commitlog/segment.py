"""One data segment and its index file: names, file handles, and the positional reads and writes on them.

`read_run` is the read hot path: two or three 32/48-byte preads (the run's first and last index records,
the predecessor's header for its chain CRC), then one pread of the run's data, decoded and checked by
`codec.decode_run`; with a byte budget, a binary search over index records picks the run's length.

A segment is the pair `data/<pos>` and `index/<pos>`, where `<pos>` is the global byte position of its first
entry, zero-padded to 20 digits (RocketMQ's naming). Entry `first_index + k` is described by index record `k`.

Invariants (kept by the log, relied on here):
- `data_len` bytes of the data file and `count` index records are valid and published; bytes past them may
  exist only transiently during an append, or after a crash (recovery cuts them).
- the data file holds entries at global positions `start .. start + data_len`; the next segment starts at
  exactly `start + data_len`.
- `flushed_data <= data_len` and `flushed_index <= count`: what is known fsynced.
- file handles may be closed (`fds_open` false) for old segments; readers then open their own read-only
  handles for the duration of one call.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Final

from dledger.commitlog.codec import DATA_MAGIC, HEADER, HEADER_SIZE, INDEX, INDEX_MAGIC, INDEX_SIZE, decode_run
from dledger.commitlog.errors import CorruptEntryError
from dledger.commitlog.fileops import FileOps
from dledger.storage_api import Entry

__all__ = ["DATA_DIR", "INDEX_DIR", "NAME_DIGITS", "Segment", "SegmentInfo", "segment_name"]

DATA_DIR: Final = "data"
INDEX_DIR: Final = "index"
NAME_DIGITS: Final = 20


def segment_name(pos: int) -> str:
    """The file name of the segment whose first entry is at global byte `pos`."""
    return f"{pos:0{NAME_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment, for retention policies: its indexes, size, last write time (epoch seconds), fsynced bytes."""

    name: str
    first_index: int
    last_index: int
    bytes: int
    last_write: float
    durable_bytes: int


class Segment:
    """A data file plus its index file. Mutated only by the appending thread (or under the log's write lock),
    except `flushed_*` and `dropped_data`, which a flush also sets (holding the log's flush lock and read lock)."""

    __slots__ = (
        "count",
        "data_fd",
        "data_len",
        "data_path",
        "dropped_data",
        "first_index",
        "flushed_data",
        "flushed_index",
        "index_fd",
        "index_path",
        "last_chain",
        "last_term",
        "mtime",
        "name",
        "start",
    )

    def __init__(self, directory: str, start: int, first_index: int) -> None:
        self.name = segment_name(start)
        self.start = start
        self.first_index = first_index
        self.data_path = os.path.join(directory, DATA_DIR, self.name)
        self.index_path = os.path.join(directory, INDEX_DIR, self.name)
        self.count = 0
        self.data_len = 0
        self.last_term = 0
        self.last_chain = 0
        self.flushed_data = 0
        self.flushed_index = 0
        self.dropped_data = 0  # the data bytes before this were evicted from the page cache (`drop_cache`)
        self.mtime = time.time()
        self.data_fd: int | None = None
        self.index_fd: int | None = None

    @property
    def last_index(self) -> int:
        return self.first_index + self.count - 1

    @property
    def end(self) -> int:
        """The global byte position just past this segment's published entries."""
        return self.start + self.data_len

    @property
    def fds_open(self) -> bool:
        return self.data_fd is not None

    def open_fds(self, ops: FileOps, *, create: bool = False) -> None:
        if self.data_fd is None:
            self.data_fd = ops.open_appending(self.data_path, create=create)
        if self.index_fd is None:
            self.index_fd = ops.open(self.index_path, create=create)

    def close_fds(self, ops: FileOps) -> None:
        """Close both handles; the fields are cleared first, so a failed close never leaves a closed (and
        soon reused) fd number in place. The first error is raised after both closes were attempted."""
        fds = (self.data_fd, self.index_fd)
        self.data_fd = self.index_fd = None
        error: BaseException | None = None
        for fd in fds:
            if fd is not None:
                try:
                    ops.close(fd)
                except BaseException as exc:
                    error = error or exc
        if error is not None:
            raise error

    def reader_fds(self, ops: FileOps) -> tuple[int, int, bool]:
        """`(data_fd, index_fd, owned)`: the open handles, or fresh read-only ones the caller must close. A
        file that is gone (deleted under the running log) is reported as `CorruptEntryError`, as damage."""
        if self.data_fd is not None and self.index_fd is not None:
            return self.data_fd, self.index_fd, False
        try:
            dfd = ops.open_readonly(self.data_path)
        except FileNotFoundError:
            raise CorruptEntryError(self.data_path, 0, self.first_index, "the segment file is missing") from None
        try:
            ifd = ops.open_readonly(self.index_path)
        except BaseException as exc:
            ops.close(dfd)
            if isinstance(exc, FileNotFoundError):
                raise CorruptEntryError(self.index_path, 0, self.first_index, "the index file is missing") from None
            raise
        return dfd, ifd, True

    def index_record(self, ops: FileOps, ifd: int, index: int) -> tuple[int, int, int]:
        """`(pos, size, term)` of entry `index` from its index record, checked for magic and index."""
        k = index - self.first_index
        raw = ops.pread(ifd, INDEX_SIZE, k * INDEX_SIZE)
        if len(raw) < INDEX_SIZE:
            raise CorruptEntryError(self.index_path, k * INDEX_SIZE, index, "index record is missing")
        magic, pos, size, idx, term = INDEX.unpack(raw)
        if magic != INDEX_MAGIC or idx != index or size < HEADER_SIZE or not self.start <= pos < pos + size <= self.end:
            raise CorruptEntryError(
                self.index_path, k * INDEX_SIZE, index, f"bad index record (magic {magic:#x}, index {idx}, pos {pos})"
            )
        return pos, size, term  # pos + size <= end: a damaged size never makes a read allocate past the segment

    def term_of(self, ops: FileOps, dfd: int, ifd: int, index: int) -> int:
        """The term of entry `index`, from its index record cross-checked with its data header (so that one
        damaged copy is reported, not returned)."""
        pos, size, term = self.index_record(ops, ifd, index)
        hdr = self.read_header(ops, dfd, pos)
        if hdr[0] != DATA_MAGIC or hdr[1] != size or hdr[2] != index or hdr[3] != term or hdr[4] != pos:
            raise CorruptEntryError(self.data_path, pos - self.start, index, "header disagrees with its index record")
        return term

    def read_header(self, ops: FileOps, dfd: int, pos: int) -> tuple[int, ...]:
        """The raw header fields of the entry at global byte `pos` (unchecked)."""
        raw = ops.pread(dfd, HEADER_SIZE, pos - self.start)
        if len(raw) < HEADER_SIZE:
            raise CorruptEntryError(self.data_path, pos - self.start, None, "header runs past the end of the file")
        return HEADER.unpack(raw)

    def read_run(
        self, ops: FileOps, lo: int, hi: int, budget: int | None, need_one: bool, prev_chain: int
    ) -> list[Entry]:
        """Entries `lo .. hi-1` (fewer if their bodies exceed `budget`, but one if `need_one`), checked, with one
        data read. `prev_chain` is the chain CRC before this segment's first entry."""
        seg = self
        dfd, ifd, owned = seg.reader_fds(ops)
        try:
            pos, _size, term = seg.index_record(ops, ifd, lo)
            prev_term = 0
            if lo > seg.first_index:  # the predecessor's stored chain CRC and term cover lo's header too
                ppos, _psize, prev_term = seg.index_record(ops, ifd, lo - 1)
                hdr = seg.read_header(ops, dfd, ppos)
                if hdr[0] != DATA_MAGIC or hdr[2] != lo - 1 or hdr[4] != ppos:
                    raise CorruptEntryError(seg.data_path, ppos - seg.start, lo - 1, "bad header")
                prev_chain = hdr[6]
            n = hi - lo
            if budget is not None:
                n = self._fit(ops, ifd, lo, n, pos, budget, 1 if need_one else 0)
                if n == 0:
                    return []
            lpos, lsize, lterm = seg.index_record(ops, ifd, lo + n - 1) if n > 1 else (pos, _size, term)
            if lpos < pos:
                raise CorruptEntryError(seg.index_path, (lo + n - 1 - seg.first_index) * INDEX_SIZE, lo + n - 1,
                                        "index record points before an earlier one")  # fmt: skip
            raw = ops.pread(dfd, lpos + lsize - pos, pos - seg.start)
            entries = decode_run(raw, first_index=lo, count=n, first_pos=pos, prev_term=prev_term,
                                 prev_chain=prev_chain, segment=seg.data_path, file_offset=pos - seg.start)  # fmt: skip
            if entries[0].term != term or entries[-1].term != lterm:
                bad = lo if entries[0].term != term else lo + n - 1
                raise CorruptEntryError(seg.index_path, (bad - seg.first_index) * INDEX_SIZE, bad,
                                        "index record term disagrees with the data")  # fmt: skip
            return entries
        finally:
            if owned:
                ops.close(dfd)
                ops.close(ifd)

    def _fit(self, ops: FileOps, ifd: int, lo: int, n: int, pos: int, budget: int, least: int) -> int:
        """The largest count `c <= n` of entries from `lo` whose bodies total <= budget (at least `least`)."""

        def body_bytes(c: int) -> int:  # entries lo .. lo+c-1; positions are contiguous inside a segment
            p, s, _t = self.index_record(ops, ifd, lo + c - 1)
            return p + s - pos - HEADER_SIZE * c

        if body_bytes(n) <= budget:
            return n
        good, bad = 0, n  # body_bytes(good) <= budget < body_bytes(bad)
        while bad - good > 1:
            mid = (good + bad) // 2
            if body_bytes(mid) <= budget:
                good = mid
            else:
                bad = mid
        return max(good, least)

    def write(self, ops: FileOps, data: bytes | bytearray | memoryview, index: bytes | bytearray | memoryview) -> None:
        """Write `data` and `index` bytes right after the published ones (does not publish them)."""
        assert self.data_fd is not None and self.index_fd is not None
        ops.pwrite(self.data_fd, data, self.data_len)
        ops.pwrite(self.index_fd, index, self.count * INDEX_SIZE)

    def cut(self, ops: FileOps, count: int, data_len: int) -> None:
        """Shrink both files to `count` entries / `data_len` bytes (the caller fixes the in-memory fields)."""
        assert self.data_fd is not None and self.index_fd is not None
        ops.truncate(self.index_fd, count * INDEX_SIZE)
        ops.truncate(self.data_fd, data_len)

    def sync(self, ops: FileOps) -> tuple[int, int]:
        """fdatasync data then index (so the data an index record points to is durable first).

        Returns the `(data_len, count)` that were published when the sync started: what is now durable.
        """
        data_len, count = self.data_len, self.count
        assert self.data_fd is not None and self.index_fd is not None
        if data_len > self.flushed_data:
            ops.datasync(self.data_fd)
        if count > self.flushed_index:
            ops.datasync(self.index_fd)
        return data_len, count

    def info(self) -> SegmentInfo:
        return SegmentInfo(self.name, self.first_index, self.last_index, self.data_len, self.mtime, self.flushed_data)

    def locate_end(self, ops: FileOps, index: int) -> tuple[int, int, int]:
        """For entry `index` of this segment: `(file offset past it, its term, its chain CRC)`, checked."""
        if not self.fds_open:
            self.open_fds(ops)
        assert self.data_fd is not None and self.index_fd is not None
        pos, size, term = self.index_record(ops, self.index_fd, index)
        hdr = self.read_header(ops, self.data_fd, pos)
        if hdr[0] != DATA_MAGIC or hdr[2] != index or hdr[4] != pos or hdr[3] != term or hdr[1] != size:
            raise CorruptEntryError(self.data_path, pos - self.start, index, "header disagrees with its index record")
        return pos + size - self.start, term, hdr[6]

    def cut_after(self, ops: FileOps, index: int, end: int, term: int, chain: int) -> None:
        """Durably drop the entries after `index` (which `locate_end` described as `end, term, chain`)."""
        count = index - self.first_index + 1
        self.cut(ops, count, end)
        assert self.data_fd is not None and self.index_fd is not None
        ops.datasync(self.data_fd)
        ops.datasync(self.index_fd)
        self.count, self.data_len, self.last_term, self.last_chain = count, end, term, chain
        self.flushed_data, self.flushed_index = end, count
        self.dropped_data = min(self.dropped_data, end)  # the bytes written here next are evicted in turn

    def remove_files(self, ops: FileOps) -> None:
        self.close_fds(ops)
        for path in (self.index_path, self.data_path):
            with contextlib.suppress(FileNotFoundError):
                ops.remove(path)

    def __repr__(self) -> str:
        return f"Segment({self.name}, {self.first_index}..{self.last_index}, {self.data_len} B)"
