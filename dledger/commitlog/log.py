"""`SegmentedLog`: the durable `LogStorage` over segment and index files.

Layout of a store directory: `data/<pos>` and `index/<pos>` segment pairs (see `segment.py`, codec in
`codec.py`), an optional `meta` file holding the base, the entry before the first (see `meta.py`), the
flush `checkpoint` (see `checkpoint.py`), and a `LOCK` file that an open log holds an exclusive flock
on (a second open raises `StoreInUseError`).

Threads: one owner thread at a time calls `append`, `truncate_after`, `compact_before`, `reset`, `close` (a mutex
enforces it); any thread may call `read`, `term_at`, `first_index`, `last_index`, `segments`, `sync`
concurrently. Readers see a consistent prefix: an append writes data and index bytes first and publishes
`last_index` last, and readers take the read side of a readers-writer lock, then snapshot `last_index`
before anything else (only appends, which do not take the lock, can move it meanwhile: forward).
Truncation, compaction, reset and close take the write side, so no reader sees half of one or uses a file handle
they close. Truncation is made durable at once (fsync), so entries it dropped never come back after a crash
behind entries that replaced them.

Durability (`durable_index`, `durable_lengths()`): `flush="sync"` writes the batch's data, fdatasyncs it,
then writes its index records, before `append` returns: one fsync per batch per segment touched, and the
index never points at data that is not durable. The index file is fsynced by the background flusher (in
both modes) and by `sync()`; a lagging index costs recovery a forward scan of the un-indexed tail only.
`flush="async"` writes data and index and returns; the flusher fdatasyncs data, then index, every
`flush_interval_ms` (default 200 ms: RocketMQ's flushIntervalCommitLog is 500 ms; we take less loss).
`durable_index` is the last index whose data is known fsynced. In both modes a segment is fsynced (data,
then index) when an append rolls over to the next one, and new files are made durable in their directory
before they get data, so only the last segment can ever hold un-fsynced bytes: after a crash, recovery
needs to repair the last segment only, and the flush checkpoint (`checkpoint.py`, rewritten after each
flush, and in sync mode after each append too, without an fsync) tells it where the un-fsynced part of
that segment starts, and so which damage is corruption of durable entries rather than a torn tail.

Each flush, and each append before it writes, checks that the open segments' files (the one it writes to)
are still there and not shorter than what the log wrote (`fstat`): a segment deleted or cut under the
running log poisons it at the next flush or append, instead of going unnoticed until the next open. Data
files are open with `O_APPEND`, so a cut that races an append (between its check and its write) cannot
be hidden either: the write lands at the cut, the file stays shorter than what the log wrote, and the
next flush or append finds it (a write at the log's own offset would have regrown the file over a hole).

Page cache: each flush evicts the durable data older than the log's newest `drop_behind_bytes` (default 64
MiB; 0: never) with `POSIX_FADV_DONTNEED`, and a segment whose handles close is evicted whole, so the log does
not grow the page cache without bound (`dropbehind.py`); reads of evicted entries go to the disk. Advice
only: it changes no content.

Reopening makes the recovered tail durable (recovery fdatasyncs the last segment and fsyncs data/, index/ and
the store directory) before `durable_index` claims it: after a kill -9 it may sit in the page cache only.
A failed append is rolled back durably (cut segments fdatasynced, created ones removed and their directories
fsynced, the checkpoint pointed back at the last published segment). Any failed fsync, and any error partway
through a roll-back, truncation or compaction, poisons the log (`LogClosedError` until reopened): after a
failed fsync the kernel may have dropped the dirty pages and marked them clean, so a retry proves nothing.

Reset (`reset(i, t)`, a follower installing a snapshot): the meta file gets the base `(i, t)` at byte position
`next_pos` (just past every existing segment) with chain CRC 0, atomically and durably; that rename is the
commit point, after which every old segment lies below the base and is deleted (by `reset` itself, or by
recovery after a crash, as after an interrupted compaction). Byte positions therefore keep growing across
resets (segment names never repeat), and the chain CRC restarts at 0 after a reset, as for entry 1 of a new log:
the entries before a reset are gone, so nothing could be chained to them.

Invariants: `first_index == base.index + 1`; segments are contiguous in index and byte position, each
holds >= 1 entry, the first starts at `base.pos`; `compact_before` never drops the last segment, so
`last_index` and its term stay known; `term_at(first_index - 1)` is the base's term.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Literal

from dledger.commitlog.checkpoint import Checkpoint, CheckpointFile
from dledger.commitlog.codec import INDEX_SIZE, MAX_ENTRY_BYTES, Batch, encode_batch
from dledger.commitlog.dropbehind import behind
from dledger.commitlog.errors import CorruptStoreError, DiskFullError, LogClosedError
from dledger.commitlog.fileops import DIR_MODE, FileOps
from dledger.commitlog.flusher import Flusher
from dledger.commitlog.locks import RWLock, lock_store
from dledger.commitlog.meta import Base, write_base
from dledger.commitlog.recovery import RecoveryReport, recover
from dledger.commitlog.segment import DATA_DIR, INDEX_DIR, Segment, SegmentInfo
from dledger.storage_api import CompactedError, Entry, UnavailableError

__all__ = [
    "DEFAULT_DROP_BEHIND_BYTES",
    "DEFAULT_FLUSH_INTERVAL_MS",
    "MIN_SEGMENT_BYTES",
    "OPEN_WINDOW",
    "SegmentInfo",
    "SegmentedLog",
]

DEFAULT_FLUSH_INTERVAL_MS = 200
DEFAULT_DROP_BEHIND_BYTES = 64 << 20  # the newest durable bytes kept in the page cache: see dropbehind.py
MIN_SEGMENT_BYTES = 64
OPEN_WINDOW = 16  # the newest segments keep their file handles open; older ones are opened per read
_FULL = {errno.ENOSPC, errno.EDQUOT}
# the part of a batch written to one segment: (segment, first entry ordinal, end ordinal, data start, data end,
# chain CRC of its last entry)
_Chunk = tuple[Segment, int, int, int, int, int]


class SegmentedLog:
    """A segmented, checksummed, recoverable Raft log. Open it with `SegmentedLog.open(directory)`."""

    def __init__(
        self, directory: str, base: Base, segs: list[Segment], report: RecoveryReport, ops: FileOps, *,
        segment_bytes: int, sync_mode: bool, flush_interval_ms: float, max_entry_bytes: int,
        drop_behind_bytes: int = DEFAULT_DROP_BEHIND_BYTES,
    ) -> None:  # fmt: skip
        self._dir = directory
        self._drop_behind = drop_behind_bytes
        self._ops = ops
        self._base = base
        self._view: tuple[tuple[Segment, ...], list[int]] = ((), [])
        self._segment_bytes = segment_bytes
        self._max_entry = max_entry_bytes
        self._sync_mode = sync_mode
        self.recovery = report
        self._mutex = threading.Lock()
        self._flush_lock = threading.Lock()
        self._rw = RWLock()
        self._closed = False
        self._lock_fd: int | None = None
        self._broken: BaseException | None = None
        self._set_segments(segs)
        self._set_tail_from_segments()
        self._durable_index = self._tail[0]
        self._ckpt_lock = threading.Lock()
        self._ckpt = CheckpointFile(directory)
        self._ckpt_start = -1  # the segment the checkpoint file describes
        last = segs[-1] if segs else None
        self._checkpoint(Checkpoint(last.start, last.data_len, last.count) if last else Checkpoint(base.pos, 0, 0))
        self._flusher = Flusher(self._flush, flush_interval_ms / 1000.0, f"commitlog-flush {directory}")

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 1 << 30,
        flush: Literal["sync", "async"] = "async",
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        drop_behind_bytes: int = DEFAULT_DROP_BEHIND_BYTES,
        verify_closed: bool = False,
        file_ops: FileOps | None = None,
    ) -> SegmentedLog:
        """Recover the store in `directory` (created if missing) and return the open log.

        `verify_closed`: also check every entry of the closed segments (reads the whole log once; see
        `recovery.recover`): damage there is cut and reported in `recovery.durable_damage` instead of
        refusing to open, and an index that disagrees with its data is rebuilt.

        `drop_behind_bytes`: the newest durable bytes left in the page cache (`dropbehind.py`; 0: never evict).
        `file_ops` is a test seam (fault injection, I/O counting); leave it None.
        """
        if flush not in ("sync", "async"):
            raise ValueError(f"flush must be 'sync' or 'async', not {flush!r}")
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be at least {MIN_SEGMENT_BYTES}, not {segment_bytes}")
        if not flush_interval_ms > 0:
            raise ValueError(f"flush_interval_ms must be positive, not {flush_interval_ms}")
        if max_entry_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"max_entry_bytes must be at least {MIN_SEGMENT_BYTES}, not {max_entry_bytes}")
        if drop_behind_bytes < 0:
            raise ValueError(f"drop_behind_bytes must be 0 or more, not {drop_behind_bytes}")
        path = os.fspath(directory)
        os.makedirs(path, DIR_MODE, exist_ok=True)
        ops = file_ops or FileOps()
        lock_fd = lock_store(path)
        try:
            base, segs, report = recover(path, ops, OPEN_WINDOW, verify_closed=verify_closed)
            log = cls(
                path, base, segs, report, ops, segment_bytes=segment_bytes, sync_mode=flush == "sync",
                flush_interval_ms=flush_interval_ms, max_entry_bytes=max_entry_bytes,
                drop_behind_bytes=drop_behind_bytes,
            )  # fmt: skip
        except BaseException:
            os.close(lock_fd)
            raise
        log._lock_fd = lock_fd
        return log

    # --- published state ---------------------------------------------------------------------------------

    def _set_segments(self, segs: Sequence[Segment]) -> None:
        self._view = (tuple(segs), [s.first_index for s in segs])  # one assignment: readers see both or neither

    @property
    def _segs(self) -> tuple[Segment, ...]:
        return self._view[0]

    def _find(self, index: int) -> tuple[int, tuple[Segment, ...]]:
        """The position of the segment holding `index` (which must exist), in a consistent snapshot."""
        segs, firsts = self._view
        return bisect.bisect_right(firsts, index) - 1, segs

    def _set_tail_from_segments(self) -> None:
        if self._segs:
            last = self._segs[-1]
            self._chain, self._next_pos = last.last_chain, last.end
            self._tail = (last.last_index, last.last_term)
        else:
            self._chain, self._next_pos = self._base.chain, self._base.pos
            self._tail = (self._base.index, self._base.term)

    @property
    def directory(self) -> str:
        return self._dir

    @property
    def first_index(self) -> int:
        return self._base.index + 1

    @property
    def last_index(self) -> int:
        return self._tail[0]

    @property
    def durable_index(self) -> int:
        """The last index whose data is known fsynced (a crash keeps at least the log up to here)."""
        return self._durable_index

    def durable_lengths(self) -> dict[str, tuple[int, int]]:
        """Per segment name: `(data bytes, index bytes)` known fsynced, for fault-injection tools."""
        return {s.name: (s.flushed_data, s.flushed_index * INDEX_SIZE) for s in self._segs}

    def segments(self) -> list[SegmentInfo]:
        """Every segment, oldest first (a snapshot), so that a retention policy can choose what to compact."""
        return [s.info() for s in self._segs]

    @contextlib.contextmanager
    def _fatal(self) -> Iterator[None]:
        """Any error inside poisons the log (used around fsyncs: after a failed fsync the kernel may have
        dropped the dirty pages and marked them clean, so a retry would report success for lost data)."""
        try:
            yield
        except BaseException as exc:
            self._broken = self._broken or exc
            raise

    def _check_usable(self) -> None:
        if self._closed:
            raise LogClosedError(f"the log at {self._dir} is closed")
        error = self._broken or self._flusher.error
        if error is not None:
            raise LogClosedError(f"the log at {self._dir} failed ({error!r}); reopen it to recover") from error

    # --- reads -------------------------------------------------------------------------------------------

    def term_at(self, index: int) -> int:
        self._rw.acquire_read()
        try:
            self._check_usable()
            last, last_term = self._tail  # under the read lock: only appends can move it, forward
            base = self._base
            if index < base.index:
                raise CompactedError(f"index {index} is compacted (first index {base.index + 1})")
            if index > last:
                raise UnavailableError(f"index {index} is past the last index {last}")
            if index == last:
                return last_term
            if index == base.index:
                return base.term
            k, segs = self._find(index)
            seg = segs[k]
            dfd, ifd, owned = seg.reader_fds(self._ops)
            try:
                return seg.term_of(self._ops, dfd, ifd, index)
            finally:
                if owned:
                    self._ops.close(dfd)
                    self._ops.close(ifd)
        finally:
            self._rw.release_read()

    def read(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo > hi:
            raise ValueError(f"read range [{lo}, {hi}) is inverted")
        self._rw.acquire_read()
        try:
            self._check_usable()
            last = self._tail[0]  # under the read lock: only appends can move it, forward
            if lo <= self._base.index:
                raise CompactedError(f"index {lo} is compacted (first index {self._base.index + 1})")
            if hi > last + 1:
                raise UnavailableError(f"index {hi - 1} is past the last index {last}")
            out: list[Entry] = []
            budget = max_bytes
            k, segs = self._find(lo)
            while lo < hi:
                seg = segs[k]
                prev_chain = segs[k - 1].last_chain if k else self._base.chain
                part = seg.read_run(self._ops, lo, min(hi, seg.first_index + seg.count), budget, not out, prev_chain)
                out += part
                lo += len(part)
                if budget is not None:
                    budget -= sum(len(e.data) for e in part)
                    if lo < seg.first_index + seg.count and lo < hi:
                        break  # the budget ran out inside this segment
                k += 1
            return out
        finally:
            self._rw.release_read()

    # --- writes ------------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._mutex:
            self._check_usable()
            active = self._segs[-1] if self._segs else None
            last, last_term = self._tail
            batch = encode_batch(
                entries, next_index=last + 1, prev_term=last_term, prev_chain=self._chain, pos=self._next_pos,
                room=self._segment_bytes - active.data_len if active else 0,
                segment_bytes=self._segment_bytes, max_entry_bytes=self._max_entry,
            )  # fmt: skip
            if active is not None and not batch.splits:  # the common case: all of it fits the active segment
                chunks = [(active, 0, len(entries), 0, len(batch.data), batch.last_chain)]
                self._write(chunks, [], batch.data, batch.index, last)
                self._publish(chunks, [], entries, batch.last_term)
            else:
                self._write_rolling(active, entries, batch, last)

    def _write(
        self, chunks: list[_Chunk], created: list[Segment], data: bytes | memoryview, index: bytes | memoryview,
        last: int,
    ) -> None:  # fmt: skip
        """Write the last chunk's data and index bytes (sync mode: data fsynced first); on error roll back
        every chunk of the batch (the caller publishes on success)."""
        seg = chunks[-1][0]
        ops = self._ops
        assert seg.data_fd is not None and seg.index_fd is not None
        with self._fatal():  # a cut file is damage to repair, not a place to write on
            if self._check_files(seg) > seg.data_len:  # unpublished bytes (none are expected): the write
                ops.truncate(seg.data_fd, seg.data_len)  # lands at the end of the file (O_APPEND), so drop them
        try:
            ops.pwrite(seg.data_fd, data, seg.data_len)
            if self._sync_mode:  # data durable before any index record points at it
                with self._fatal():
                    ops.datasync(seg.data_fd)
            ops.pwrite(seg.index_fd, index, seg.count * INDEX_SIZE)
        except OSError as exc:
            self._roll_back([c[0] for c in chunks if c[0] not in created], created)
            if exc.errno in _FULL:
                raise DiskFullError(
                    f"disk full while appending from entry {last + 1} to {self._dir}: nothing was appended"
                ) from exc
            raise

    def _write_rolling(self, active: Segment | None, entries: Sequence[Entry], batch: Batch, last: int) -> None:
        """A batch that opens one or more new segments: each closed segment is made durable before the next
        one gets data (so that only the last segment ever holds un-fsynced bytes)."""
        bounds = [(k, d) for k, d, _c in batch.splits]
        if not bounds or bounds[0][0] != 0:
            bounds.insert(0, (0, 0))
        bounds.append((len(entries), len(batch.data)))
        chains = [c for k, _d, c in batch.splits if k != 0] + [batch.last_chain]
        fresh_start = batch.splits[0][0] == 0
        chunks: list[_Chunk] = []
        created: list[Segment] = []
        data, index = memoryview(batch.data), memoryview(batch.index)
        for j, ((k0, d0), (k1, d1)) in enumerate(itertools.pairwise(bounds)):
            if j == 0 and active is not None and not fresh_start:
                seg = active
            else:
                try:
                    with self._fatal():
                        if chunks:
                            self._sync_fds(chunks[-1][0])
                        elif active is not None:
                            self._sync_segment(active)
                            self._durable_index = max(self._durable_index, active.last_index)
                    seg = Segment(self._dir, self._next_pos + d0, last + 1 + k0)
                    created.append(seg)
                    seg.open_fds(self._ops, create=True)
                    for sub in (DATA_DIR, INDEX_DIR):
                        self._ops.fsync_dir(os.path.join(self._dir, sub))
                    self._checkpoint(Checkpoint(seg.start, 0, 0))  # nothing of it is durable yet
                except OSError:
                    self._roll_back([c[0] for c in chunks if c[0] not in created], created)
                    raise
            chunks.append((seg, k0, k1, d0, d1, chains[j]))
            self._write(chunks, created, data[d0:d1], index[k0 * INDEX_SIZE : k1 * INDEX_SIZE], last)
        self._publish(chunks, created, entries, batch.last_term)

    def _roll_back(self, touched: list[Segment], created: list[Segment]) -> None:
        """Undo a failed append, durably: part of the batch may already be durable (a chunk fsynced at
        rollover, a new segment's name), so shrink touched segments to their published size and fsync them,
        delete created ones and fsync the directories, and point the checkpoint back at the last published
        segment. If any of that fails, the files may not match memory: refuse service until reopened."""
        try:
            for seg in touched:
                seg.cut(self._ops, seg.count, seg.data_len)
            for seg in created:
                seg.remove_files(self._ops)
            if created:
                for sub in (DATA_DIR, INDEX_DIR):
                    self._ops.fsync_dir(os.path.join(self._dir, sub))
            last = self._segs[-1] if self._segs else None
            for seg in dict.fromkeys([*touched, *([last] if created and last is not None else [])]):
                if seg.fds_open:
                    self._sync_fds(seg)
                    seg.flushed_data, seg.flushed_index = seg.data_len, seg.count
                    self._durable_index = max(self._durable_index, seg.last_index)
            if created:  # the checkpoint named a created segment: restore it (else flushes never update it)
                cp = Checkpoint(last.start, last.data_len, last.count) if last else Checkpoint(self._base.pos, 0, 0)
                self._checkpoint(cp)
        except BaseException as exc:
            self._broken = exc

    def _publish(
        self, chunks: list[_Chunk], created: list[Segment],
        entries: Sequence[Entry], term: int,
    ) -> None:  # fmt: skip
        now = time.time()
        for seg, k0, k1, d0, d1, chain in chunks:
            seg.data_len += d1 - d0
            seg.count += k1 - k0
            seg.last_term = entries[k1 - 1].term
            seg.last_chain = chain
            seg.mtime = now
            if self._sync_mode:
                seg.flushed_data = seg.data_len
        for seg, *_ in chunks[:-1]:  # synced at rollover
            seg.flushed_data, seg.flushed_index = seg.data_len, seg.count
            self._durable_index = max(self._durable_index, seg.last_index)
        if created:
            self._set_segments([*self._segs, *created])
        self._chain, self._next_pos = chunks[-1][5], chunks[-1][0].end
        self._tail = (entries[-1].index, term)  # publish: readers may now see the batch
        if self._sync_mode:
            self._durable_index = entries[-1].index
            # the data is fsynced: say so in the checkpoint now (one pwrite, no fsync), so that recovery
            # tells corruption of these acknowledged entries from a torn tail (see checkpoint.py)
            active = chunks[-1][0]
            self._checkpoint(Checkpoint(active.start, active.data_len, active.count), only_if_current=True)
        if created and len(self._segs) > OPEN_WINDOW:
            try:
                self._close_old_handles()
            except BaseException as exc:  # the batch is published (and in sync mode durable): do not report
                self._broken = exc  # it as failed; refuse the next call instead

    def _close_old_handles(self) -> None:
        """Close the handles of segments that fell out of the open window (flushing them first)."""
        self._rw.acquire_write()
        try:
            for seg in self._segs[:-OPEN_WINDOW]:
                if seg.fds_open:
                    self._sync_segment(seg)
                    if self._drop_behind:  # OPEN_WINDOW segments old: evicted whole
                        self._evict(seg, seg.dropped_data, seg.data_len)
                    seg.close_fds(self._ops)
        except BaseException as exc:
            self._broken = self._broken or exc
            raise
        finally:
            self._rw.release_write()

    def _checkpoint(self, cp: Checkpoint, *, only_if_current: bool = False, durable: bool = False) -> None:
        """Record what of the last segment is fsynced (see `checkpoint.py`). The flusher passes
        `only_if_current`, so that it never moves the checkpoint back to a segment the log rolled past;
        truncation passes `durable`."""
        with self._ckpt_lock:
            if only_if_current and cp.start != self._ckpt_start:
                return
            self._ckpt.write(cp)
            self._ckpt_start = cp.start
            if durable:
                self._ckpt.sync(self._ops)

    def _sync_fds(self, seg: Segment) -> None:
        """fdatasync a segment's data, then index, whatever is published (used at rollover, in `append`)."""
        assert seg.data_fd is not None and seg.index_fd is not None
        self._ops.datasync(seg.data_fd)
        self._ops.datasync(seg.index_fd)

    def _sync_segment(self, seg: Segment) -> tuple[int, int]:
        """fdatasync `seg`; returns the `(data_len, count)` now durable (a consistent pair)."""
        data_len, count = seg.sync(self._ops)
        seg.flushed_data = max(seg.flushed_data, data_len)
        seg.flushed_index = max(seg.flushed_index, count)
        return data_len, count

    def _evict(self, seg: Segment, lo: int, hi: int) -> None:
        """Evict `seg`'s durable data bytes [lo, hi) from the page cache (see dropbehind.py)."""
        if hi > lo:
            assert seg.data_fd is not None
            self._ops.drop_cache(seg.data_fd, lo, hi - lo)
            seg.dropped_data = hi

    def truncate_after(self, index: int) -> None:
        with self._mutex:
            self._check_usable()
            base = self._base
            if index < base.index:
                raise CompactedError(f"cannot truncate after {index}: compacted up to {base.index}")
            if index >= self._tail[0]:
                return
            self._rw.acquire_write()
            try:
                k, view = self._find(index)
                segs = list(view)
                keep = segs[k] if index > base.index else None
                new_end = keep.locate_end(self._ops, index) if keep is not None else None  # before any change
                with self._fatal():  # from here on a failure leaves files and memory apart: poison
                    self._truncate_files(segs, keep, new_end, index)
            finally:
                self._rw.release_write()

    def _truncate_files(
        self, segs: list[Segment], keep: Segment | None, new_end: tuple[int, int, int] | None, index: int
    ) -> None:
        """The file part of `truncate_after` (the caller poisons the log if it fails partway)."""
        base = self._base
        removed = False
        while segs and segs[-1] is not keep:
            segs.pop().remove_files(self._ops)
            removed = True
        if removed:
            for sub in (DATA_DIR, INDEX_DIR):
                self._ops.fsync_dir(os.path.join(self._dir, sub))
        if keep is not None and new_end is not None:
            keep.cut_after(self._ops, index, *new_end)  # durable: truncation is rare
            self._checkpoint(Checkpoint(keep.start, keep.data_len, keep.count), durable=True)
        else:
            self._checkpoint(Checkpoint(base.pos, 0, 0), durable=True)
        self._set_segments(segs)
        self._set_tail_from_segments()
        self._durable_index = index  # closed segments were synced at rollover, `keep` just now

    def compact_before(self, index: int) -> None:
        with self._mutex:
            self._check_usable()
            drop = [s for s in self._segs[:-1] if s.last_index < index]
            if not drop:
                return
            self._flush()  # what stays must be durable before the meta file says the rest is gone
            gone = drop[-1]
            base = Base(gone.last_index, gone.last_term, gone.end, gone.last_chain)
            self._rw.acquire_write()
            try:
                with self._fatal():  # a failure partway leaves files and memory apart: poison
                    write_base(self._dir, base, self._ops)
                    self._base = base
                    self._set_segments(self._segs[len(drop) :])
                    for seg in drop:
                        seg.remove_files(self._ops)
                    for sub in (DATA_DIR, INDEX_DIR):
                        self._ops.fsync_dir(os.path.join(self._dir, sub))
            finally:
                self._rw.release_write()

    def reset(self, index: int, term: int) -> None:
        """Drop every entry and continue after a snapshot ending at `index` (term `term`): an empty log with
        `first_index == index + 1`, durable and crash-atomic when this returns.

        The meta file is the commit point: the new base is `(index, term)` at byte position `next_pos` (past
        every existing segment) with chain CRC 0, so once it is durable every old segment lies below the base
        and recovery deletes whatever a crash left of them (as after an interrupted compaction). Before it is
        durable, a crash leaves the old log. The next entry is written at `next_pos` and its chain restarts
        from 0, like entry 1 of a new log.
        """
        for name, value in (("index", index), ("term", term)):
            if type(value) is not int or value < 0:
                raise ValueError(f"reset needs a non-negative int {name}, not {value!r}")
        with self._mutex:
            self._check_usable()
            base = Base(index, term, self._next_pos, 0)
            self._rw.acquire_write()
            try:
                with self._fatal():  # a failure partway leaves files and memory apart: poison
                    write_base(self._dir, base, self._ops)  # the commit point (atomic, durable)
                    drop = self._segs
                    self._base = base
                    self._set_segments([])
                    self._set_tail_from_segments()
                    self._durable_index = index
                    self._checkpoint(Checkpoint(base.pos, 0, 0))
                    for seg in drop:
                        seg.remove_files(self._ops)
                    if drop:
                        for sub in (DATA_DIR, INDEX_DIR):
                            self._ops.fsync_dir(os.path.join(self._dir, sub))
            finally:
                self._rw.release_write()

    # --- durability and lifetime -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every appended entry (data and index) durable before returning."""
        self._check_usable()
        self._flush()
        self._check_usable()

    def _flush(self) -> None:
        try:
            self._flush_unguarded()
        except BaseException as exc:  # a failed fsync may have dropped dirty pages (fsyncgate): never retry it
            self._broken = self._broken or exc
            raise

    def _flush_unguarded(self) -> None:
        with self._flush_lock:
            self._rw.acquire_read()
            try:
                if self._closed:
                    return
                last = self._tail[0]
                segs = self._segs
                for seg in segs:
                    if seg.fds_open:
                        self._check_files(seg)
                    if seg.fds_open and (seg.data_len > seg.flushed_data or seg.count > seg.flushed_index):
                        data_len, count = self._sync_segment(seg)
                        if seg is segs[-1]:
                            self._checkpoint(Checkpoint(seg.start, data_len, count), only_if_current=True)
                for seg, lo, hi in behind(segs[-OPEN_WINDOW:], self._drop_behind):  # the rest have no handles
                    self._evict(seg, lo, hi)
                self._durable_index = max(self._durable_index, last)
            finally:
                self._rw.release_read()

    def _check_files(self, seg: Segment) -> int:
        """Raise `CorruptStoreError` when a segment's files were deleted or cut under the open log (an
        fsync of an unlinked file succeeds, so the flush alone would not notice; the flush then poisons
        the log, and the node fences itself until a restart recovers the store). Returns the data file's
        size. A cut that races an append (after this check, before the write) still shows here next time:
        the data file is open with `O_APPEND`, so the write lands at the cut, and the file stays shorter
        than what the log wrote instead of growing back to the right size over a hole."""
        assert seg.data_fd is not None and seg.index_fd is not None
        sizes = []
        for fd, path, length in ((seg.data_fd, seg.data_path, seg.data_len), (seg.index_fd, seg.index_path, 0)):
            st = os.fstat(fd)
            if st.st_nlink == 0:
                raise CorruptStoreError(f"{path}: the file was deleted under the running log")
            if st.st_size < length:
                raise CorruptStoreError(f"{path}: the file was cut to {st.st_size} bytes under the running log")
            sizes.append(st.st_size)
        return sizes[0]

    def close(self) -> None:
        """Flush, stop the flusher, close every file. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._flusher.stop()
            try:
                if self._broken is None and self._flusher.error is None:
                    self._flush()
            finally:
                self._rw.acquire_write()
                try:
                    self._closed = True
                    for seg in self._segs:
                        seg.close_fds(self._ops)
                    self._ckpt.close()
                    if self._lock_fd is not None:
                        os.close(self._lock_fd)  # releases the store lock
                        self._lock_fd = None
                finally:
                    self._rw.release_write()

    def __enter__(self) -> SegmentedLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SegmentedLog({self._dir!r}, {self.first_index}..{self.last_index}, {len(self._segs)} segments)"
