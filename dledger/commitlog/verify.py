"""Read-only inspection of a store: `verify_store` checks every byte, `dump_entries` walks a range.

Neither opens the store as a `SegmentedLog` (which would repair the tail): they only read, so they are safe
on a store that another process has open, or that crashed and was not yet reopened.

`verify_store` walks each segment's data sequentially, checking every entry (magic, size, index, position,
kind, body CRC, chain CRC from its predecessor, non-decreasing terms) and comparing it with its index
record; segments must be contiguous in index and byte position and start at the base of the meta file.
Segments that start below the base (left by a crash after a compaction or a reset wrote the meta file, before
it deleted them; the next open deletes them) are not part of the log and are skipped. After a reset the base's
chain CRC is 0 (`log.py`), so the first entry after it is checked against that seed like any other.
After a bad entry it resynchronises on the index record when that is plausible, so every bad entry is
reported once, with its file and byte offset. Memory stays bounded: data and index are read in chunks.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from dledger.commitlog.codec import HEADER_SIZE, INDEX, INDEX_MAGIC, INDEX_SIZE, check_entry
from dledger.commitlog.errors import CorruptStoreError
from dledger.commitlog.meta import Base, read_base
from dledger.commitlog.recovery import SCAN_CHUNK, list_segments
from dledger.commitlog.segment import DATA_DIR, INDEX_DIR, segment_name
from dledger.storage_api import Entry, EntryKind

__all__ = ["Problem", "VerifyReport", "dump_entries", "verify_store"]

_SIZE = struct.Struct("<I")
_INDEX_CHUNK = 4096  # index records per read


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad thing found: the file, the byte offset in it, the entry index if known, and what is wrong."""

    file: str
    position: int
    index: int | None
    reason: str

    def __str__(self) -> str:
        what = f" entry {self.index}" if self.index is not None else ""
        return f"{self.file} @ byte {self.position}{what}: {self.reason}"


@dataclass(slots=True)
class VerifyReport:
    """What `verify_store` found: counts, the index range, and every problem."""

    segments: int = 0
    entries: int = 0
    first_index: int = 1
    last_index: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


class _Chunks:
    """Chunked positional reads of one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size
        self._buf = b""
        self._off = 0

    def get(self, off: int, n: int) -> tuple[bytes, int]:
        """A buffer holding bytes `off .. off + n` (fewer at end of file) and the offset of `off` in it."""
        rel = off - self._off
        if rel < 0 or rel + n > len(self._buf):
            self._buf = os.pread(self.fd, max(n, SCAN_CHUNK), off)
            self._off, rel = off, 0
        return self._buf, rel

    def close(self) -> None:
        os.close(self.fd)


@dataclass(slots=True)
class _Walk:
    index: int
    pos: int
    chain: int | None
    term: int


def _walk_segment(
    directory: str, start: int, w: _Walk, problems: list[Problem], skip: int = 0
) -> Iterator[Entry | Problem]:
    """Check one segment from its start (or from its `skip`-th entry, found by its index record, when that
    record is sane); yields entries and problems; updates `w` to the state after the segment."""
    name = segment_name(start)
    data = _Chunks(os.path.join(directory, DATA_DIR, name))
    index_path = os.path.join(directory, INDEX_DIR, name)
    idx: _Chunks | None = _Chunks(index_path) if os.path.exists(index_path) else None
    try:
        if idx is None:
            yield _note(problems, index_path, 0, None, "index file is missing (the next open rebuilds it)")
        elif idx.size % INDEX_SIZE:
            yield _note(problems, index_path, idx.size, None, "index file ends in a partial record")
        if start != w.pos:
            yield _note(problems, data.path, 0, w.index, f"segment starts at byte {start}, expected {w.pos}")
            w.pos, w.chain = start, None
        off, k = 0, 0
        if skip > 0 and idx is not None and (skip + 1) * INDEX_SIZE <= idx.size:
            buf, rel = idx.get(skip * INDEX_SIZE, INDEX_SIZE)
            magic, pos, _size, index, _term = INDEX.unpack_from(buf, rel)
            if magic == INDEX_MAGIC and index == w.index + skip and start <= pos < start + data.size:
                off, k = pos - start, skip
                w.index, w.pos, w.chain, w.term = index, pos, None, 0
        while off < data.size:
            rec = None
            if idx is not None and (k + 1) * INDEX_SIZE <= idx.size:
                buf, rel = idx.get(k * INDEX_SIZE, INDEX_SIZE * _INDEX_CHUNK)
                rec = INDEX.unpack_from(buf, rel)
            buf, rel = data.get(off, HEADER_SIZE)
            if len(buf) - rel >= HEADER_SIZE:
                (size,) = _SIZE.unpack_from(buf, rel + 4)
                if HEADER_SIZE <= size <= data.size - off:
                    buf, rel = data.get(off, size)
            try:
                size, term, kind, chain, _b, n = check_entry(
                    buf, rel, len(buf) - rel, index=w.index, pos=w.pos, prev_chain=w.chain
                )
                if term < w.term:
                    raise ValueError(f"term {term} below the previous {w.term}")
            except ValueError as exc:
                yield _note(problems, data.path, off, w.index, str(exc))
                ok = rec is not None and rec[0] == INDEX_MAGIC and rec[1] == w.pos and rec[3] == w.index
                if not ok or rec is None or rec[2] < HEADER_SIZE or off + rec[2] > data.size:
                    yield _note(problems, data.path, off, w.index, f"cannot resync: {data.size - off} bytes unread")
                    break
                size = rec[2]  # resync on the index record and carry on
                w.chain, w.term = None, rec[4]
            else:
                if rec is None:
                    yield _note(problems, index_path, k * INDEX_SIZE, w.index, "no index record (index lags data)")
                elif rec != (INDEX_MAGIC, w.pos, size, w.index, term):
                    yield _note(problems, index_path, k * INDEX_SIZE, w.index, f"index record {rec[1:]} disagrees")
                yield Entry(w.index, term, bytes(buf[rel + HEADER_SIZE : rel + HEADER_SIZE + n]), EntryKind(kind))
                w.chain, w.term = chain, term
            off += size
            w.pos += size
            w.index += 1
            k += 1
        if idx is not None and idx.size // INDEX_SIZE > k:
            extra = idx.size // INDEX_SIZE - k
            yield _note(problems, index_path, k * INDEX_SIZE, None, f"{extra} index records past the data")
    finally:
        data.close()
        if idx is not None:
            idx.close()


def _note(problems: list[Problem], path: str, pos: int, index: int | None, reason: str) -> Problem:
    p = Problem(path, pos, index, reason)
    problems.append(p)
    return p


def _open_store(directory: str) -> tuple[Base, list[int]]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such directory")
    if not os.path.isdir(os.path.join(directory, DATA_DIR)):
        raise CorruptStoreError(f"{directory}: not a commit log store (no {DATA_DIR}/ directory)")
    base = read_base(directory)
    # segments wholly below the base were compacted or reset away; a crash kept them, the next open deletes them
    return base, [s for s in list_segments(directory) if s >= base.pos]


def verify_store(directory: str) -> VerifyReport:
    """Check every entry of the store in `directory`, without changing anything."""
    base, starts = _open_store(directory)
    report = VerifyReport(segments=len(starts), first_index=base.index + 1, last_index=base.index)
    w = _Walk(base.index + 1, base.pos, base.chain, base.term)
    for start in starts:
        for item in _walk_segment(directory, start, w, report.problems):
            if isinstance(item, Entry):
                report.entries += 1
                report.last_index = item.index
    return report


def dump_entries(directory: str, lo: int, hi: int | None) -> Iterator[Entry | Problem]:
    """Entries with `lo <= index < hi` (to the end when `hi` is None), and problems found on the way, in order.

    Starts at the segment that holds `lo` (by its index file's first record), at `lo` itself (by its index
    record), and checks what it yields.
    """
    base, starts = _open_store(directory)
    w = _Walk(base.index + 1, base.pos, base.chain, base.term)
    k0 = 0
    for k, start in enumerate(starts[1:], 1):  # skip whole segments that end before `lo`
        path = os.path.join(directory, INDEX_DIR, segment_name(start))
        try:
            with open(path, "rb") as f:
                first = INDEX.unpack(f.read(INDEX_SIZE))
        except (OSError, struct.error):
            break
        if first[0] != INDEX_MAGIC or first[3] > lo or first[1] != start:
            break
        k0, w = k, _Walk(first[3], start, None, 0)
    for j, start in enumerate(starts[k0:]):
        for item in _walk_segment(directory, start, w, [], max(0, lo - w.index) if j == 0 else 0):
            if isinstance(item, Entry):
                if hi is not None and item.index >= hi:
                    return
                if item.index >= lo:
                    yield item
            elif item.index is None or item.index >= lo:
                yield item
