"""Opening a store: find the segments, trust the old ones cheaply, validate and repair only the tail.

Cost: per older segment, two small reads (its last index record and that entry's header); for the last
segment, at most TAIL_RECORDS index records and TAIL_VERIFY_BYTES of data (plus one entry), then a forward
scan of any data the index does not cover yet. So opening does not grow with the size of the log, except by
two reads per segment; only a missing or short index tail costs a scan, bounded by one segment.

What the tail procedure does, on the last segment:
1. trust the longest prefix of the last TAIL_RECORDS index records that is self-consistent (magic,
   contiguous indexes and positions, non-decreasing terms, inside the data file);
2. re-check the data of the last of those entries (covering >= TAIL_VERIFY_BYTES or the whole window):
   header fields against the index record, body CRC, chain CRC; cut at the first bad one;
3. scan the data past the last trusted entry, rebuilding index records for the valid entries the index
   lagged behind, and cut the data at the first torn or invalid entry;
4. if the segment ends up empty it is deleted and the previous segment gets the same treatment.

When the flush checkpoint (`checkpoint.py`) says that less of the last segment is known fsynced than the
window of step 2 covers, steps 2-3 start at the checkpoint instead: every entry written after the last
flush is checked, so a hole a crash left in un-fsynced data is cut wherever it is (this costs a scan of
what was written since the last flush; after a clean close the checkpoint is at the end and costs nothing).

At the end, opening fdatasyncs the last segment's data and index and fsyncs data/, index/ and the store
directory (a few fsyncs per open, whatever the log's size): after a kill -9 what recovery found may still be in
the page cache only, and the log then reports it durable. When the header of the entry just before the
re-checked window is damaged, recovery walks back to the last entry whose index record and header agree and
scans forward from there, so it never keeps a damaged entry (term or chain CRC unknown) as the last one.

Corruption is not a torn tail: when the cut falls inside what the flush checkpoint recorded as fsynced (or
the checkpoint names a segment that is gone), the entries cut there were durable, so acknowledged in sync
mode. Recovery still cuts them (a log is a valid prefix), but reports it apart (`RecoveryReport.
durable_damage`: the first index lost and the last one known durable, logged as an error), so that the
node can refuse to vote until it has them again (protocol-aware recovery: see the node's `recovering`).

Older segments: a missing or inconsistent index is rebuilt by scanning that segment's data. A segment is
fsynced when the log rolls over to the next one, so a closed segment never loses bytes in a crash; if its
data is invalid before its end that is real corruption, and opening fails with `CorruptStoreError` rather
than silently dropping every later segment. Corruption further back than the tail window is not looked for
here: reads detect it (`CorruptEntryError`) and `dledger log verify` reports it.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from dledger.commitlog.checkpoint import CHECKPOINT_NAME, Checkpoint, read_checkpoint
from dledger.commitlog.codec import DATA_MAGIC, HEADER_SIZE, INDEX, INDEX_MAGIC, INDEX_SIZE, check_entry
from dledger.commitlog.errors import CorruptStoreError
from dledger.commitlog.fileops import DIR_MODE, FILE_MODE, FileOps
from dledger.commitlog.meta import Base, read_base
from dledger.commitlog.segment import DATA_DIR, INDEX_DIR, NAME_DIGITS, Segment

__all__ = ["SCAN_CHUNK", "TAIL_RECORDS", "TAIL_VERIFY_BYTES", "RecoveryReport", "list_segments", "recover"]

log = logging.getLogger(__name__)

TAIL_RECORDS = 1024  # index records read back at the tail
TAIL_VERIFY_BYTES = 1 << 20  # data re-checked at the tail (at least the last entry)
SCAN_CHUNK = 8 << 20  # read size when scanning data forward
_NAME = re.compile(rf"^\d{{{NAME_DIGITS}}}$")
_SIZE = struct.Struct("<I")


@dataclass(slots=True)
class RecoveryReport:
    """What opening found and changed. `problems` lists human-readable notes of every cut or repair."""

    entries_checked: int = 0
    bytes_after_checkpoint: int = 0  # un-flushed bytes of the last segment that were checked
    index_records_rebuilt: int = 0
    data_bytes_cut: int = 0
    segments_deleted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # corruption of entries the flush checkpoint said were durable: `(first index lost, last index known
    # durable)`; recovery still cut them (the log must stay a valid prefix), but they were not a torn tail
    durable_damage: tuple[int, int] | None = None

    def note(self, message: str) -> None:
        self.problems.append(message)
        log.warning("commitlog recovery: %s", message)

    def damage(self, first_lost: int, durable_until: int, message: str) -> None:
        """Record corruption inside the durable range (widening an earlier record)."""
        if self.durable_damage is not None:
            first_lost = min(first_lost, self.durable_damage[0])
            durable_until = max(durable_until, self.durable_damage[1])
        self.durable_damage = (first_lost, durable_until)
        self.problems.append(message)
        log.error("commitlog recovery: CORRUPTION of durable entries: %s", message)


def list_segments(directory: str) -> list[int]:
    """Sorted start positions of the data segments in `directory` (other names are ignored)."""
    data_dir = os.path.join(directory, DATA_DIR)
    return sorted(int(n) for n in os.listdir(data_dir) if _NAME.match(n))


@dataclass(slots=True)
class _Scan:
    count: int
    end: int  # file offset just past the last valid entry
    chain: int
    term: int
    records: bytearray
    reason: str | None


def _scan(seg: Segment, ops: FileOps, dfd: int, off: int, index: int, chain: int, term: int, stop: int) -> _Scan:
    """Check entries from file offset `off` up to `stop`, building their index records; stop at the first bad one."""
    records = bytearray()
    buf = b""
    buf_off = off
    count = 0
    reason: str | None = None
    while off < stop:
        rel = off - buf_off
        if rel + HEADER_SIZE > len(buf):
            buf, buf_off, rel = ops.pread(dfd, min(SCAN_CHUNK, stop - off), off), off, 0
        if len(buf) - rel >= HEADER_SIZE:
            (size,) = _SIZE.unpack_from(buf, rel + 4)
            if rel + size > len(buf) and off + size <= stop:
                buf, buf_off, rel = ops.pread(dfd, max(SCAN_CHUNK, size), off), off, 0
        try:
            size, t, _kind, chain, _bcrc, _ln = check_entry(
                buf, rel, len(buf) - rel, index=index, pos=seg.start + off, prev_chain=chain
            )
            if t < term:
                raise ValueError(f"term {t} below the previous {term}")
        except ValueError as exc:
            reason = f"entry {index} at byte {off}: {exc}"
            break
        records += INDEX.pack(INDEX_MAGIC, seg.start + off, size, index, t)
        term = t
        count += 1
        index += 1
        off += size
    return _Scan(count, off, chain, term, records, reason)


def _check_closed(seg: Segment, ops: FileOps, data_len: int) -> bool:
    """Cheap check of an older segment: its last index record and that entry's header agree with the files."""
    assert seg.data_fd is not None and seg.index_fd is not None
    isize = ops.size(seg.index_fd)
    n = isize // INDEX_SIZE
    if isize % INDEX_SIZE or n == 0 or ops.size(seg.data_fd) != data_len:  # (a short file: scan, then refuse)
        return False
    magic, pos, size, idx, term = INDEX.unpack(ops.pread(seg.index_fd, INDEX_SIZE, (n - 1) * INDEX_SIZE))
    if magic != INDEX_MAGIC or idx != seg.first_index + n - 1 or pos + size != seg.start + data_len:
        return False
    if not seg.start <= pos or size < HEADER_SIZE:
        return False
    hmagic, hsize, hidx, hterm, hpos, _kind, hchain, _bcrc, _ln = seg.read_header(ops, seg.data_fd, pos)
    if (hmagic, hsize, hidx, hterm, hpos) != (DATA_MAGIC, size, idx, term, pos):
        return False
    seg.count, seg.data_len, seg.last_term, seg.last_chain = n, data_len, term, hchain
    return True


class _IndexRecord(NamedTuple):
    """One fixed-width index record (`codec.INDEX`): where entry `entry_index` lies in the data file."""

    magic: int
    pos: int  # global byte position of the entry
    size: int
    entry_index: int
    term: int


class _Header(NamedTuple):
    """The fixed header of an entry in the data file (`codec.HEADER`), as read (unchecked)."""

    magic: int
    size: int
    entry_index: int
    term: int
    pos: int
    kind: int
    chain: int  # the chain CRC through this entry
    body_crc: int
    body_len: int


class _Good(NamedTuple):
    """The segment's first `entries` entries are good: they end at file offset `end`, with chain CRC `chain` and
    term `term` (for `entries == 0`: the chain and term before the segment)."""

    entries: int
    end: int
    chain: int
    term: int


def _record(seg: Segment, ops: FileOps, k: int) -> _IndexRecord | None:
    """The index record of the segment's entry number `k` (0-based), or None when the file is shorter."""
    assert seg.index_fd is not None
    raw = ops.pread(seg.index_fd, INDEX_SIZE, k * INDEX_SIZE)
    return _IndexRecord(*INDEX.unpack(raw)) if len(raw) == INDEX_SIZE else None


def _header(seg: Segment, ops: FileOps, pos: int) -> _Header:
    assert seg.data_fd is not None
    return _Header(*seg.read_header(ops, seg.data_fd, pos))


def _checkpoint_seed(
    seg: Segment, ops: FileOps, ckpt: Checkpoint | None, before: int, file_len: int, chain0: int, term0: int
) -> _Good | None:
    """What is good at the checkpoint, if it is for `seg`, lies before entry `before` and agrees with the files;
    else None (the checkpoint is only a hint)."""
    if ckpt is None or ckpt.start != seg.start or ckpt.count >= before or ckpt.data_len > file_len:
        return None
    if ckpt.count == 0:
        return _Good(0, 0, chain0, term0) if ckpt.data_len == 0 else None
    rec = _record(seg, ops, ckpt.count - 1)
    if rec is None or rec.magic != INDEX_MAGIC or rec.entry_index != seg.first_index + ckpt.count - 1:
        return None
    if rec.pos + rec.size != seg.start + ckpt.data_len:
        return None
    hdr = _header(seg, ops, rec.pos)
    if (hdr.magic, hdr.size, hdr.entry_index, hdr.pos) != (DATA_MAGIC, rec.size, rec.entry_index, rec.pos):
        return None
    return _Good(ckpt.count, ckpt.data_len, hdr.chain, hdr.term)


def _sane_entry(seg: Segment, ops: FileOps, file_len: int, k: int) -> _Good | None:
    """The segment's first `k + 1` entries as good when the index record and data header of entry number `k`
    (0-based) agree (its body is not checked); else None."""
    rec = _record(seg, ops, k)
    if rec is None or rec.magic != INDEX_MAGIC or rec.entry_index != seg.first_index + k or rec.size < HEADER_SIZE:
        return None
    if not seg.start <= rec.pos or rec.pos - seg.start + rec.size > file_len:
        return None
    hdr = _header(seg, ops, rec.pos)
    expected = (DATA_MAGIC, rec.size, rec.entry_index, rec.term, rec.pos)
    if (hdr.magic, hdr.size, hdr.entry_index, hdr.term, hdr.pos) != expected:
        return None
    return _Good(k + 1, rec.pos + rec.size - seg.start, hdr.chain, rec.term)


def _consistent_prefix(seg: Segment, window: list[_IndexRecord], first: int, file_len: int) -> list[_IndexRecord]:
    """The records of `window` (entries `first`, `first + 1`, ...) up to the first that is not self-consistent:
    magic, contiguous indexes and positions, non-decreasing terms, inside the data file."""
    prev_end = prev_term = -1
    for j, rec in enumerate(window):
        k = first + j
        if rec.magic != INDEX_MAGIC or rec.entry_index != seg.first_index + k or rec.size < HEADER_SIZE:
            return window[:j]
        if rec.pos < seg.start or rec.pos - seg.start + rec.size > file_len or (k == 0 and rec.pos != seg.start):
            return window[:j]
        if (j > 0 and rec.pos != prev_end) or rec.term < prev_term:
            return window[:j]
        prev_end, prev_term = rec.pos + rec.size, rec.term
    return window


def _trusted_records(seg: Segment, ops: FileOps, file_len: int) -> tuple[int, list[_IndexRecord]]:
    """Step 1: `(first, records)`, the longest self-consistent prefix of the last TAIL_RECORDS index records,
    starting at entry number `first`. When not even the first record of that window holds, the window before it
    is tried, down to the segment's start (then `records` may be empty)."""
    assert seg.index_fd is not None
    end = ops.size(seg.index_fd) // INDEX_SIZE
    while True:
        first = max(0, end - TAIL_RECORDS)
        raw = ops.pread(seg.index_fd, (end - first) * INDEX_SIZE, first * INDEX_SIZE)
        window = [_IndexRecord(*r) for r in INDEX.iter_unpack(raw[: len(raw) - len(raw) % INDEX_SIZE])]
        trusted = _consistent_prefix(seg, window, first, file_len)
        if trusted or first == 0:
            return first, trusted
        end = first  # the whole window is bad: trust less


def _recheck(
    seg: Segment, ops: FileOps, file_len: int, window: list[_IndexRecord], first: int, before: _Good,
    report: RecoveryReport,
) -> _Good:
    """Step 2: check the data of the entries `window` indexes (numbers `first`, `first + 1`, ...: header against
    the index record, body CRC, chain CRC, terms); what is good up to the first bad one. `before` is what holds
    before the segment. When the header of entry `first - 1` is damaged, what is good ends before the first
    damaged header of the run that leads to it (step 3 scans from there)."""
    assert seg.data_fd is not None
    pred = _sane_entry(seg, ops, file_len, first - 1) if first > 0 else None
    if first > 0 and pred is None:  # entries j .. first-1 have damaged headers; j-1 is sane, or j is the first
        j = first - 1
        while j > 0 and (pred := _sane_entry(seg, ops, file_len, j - 1)) is None:
            j -= 1
        report.note(f"{seg.data_path}: entry {seg.first_index + j} has a damaged header; scan from it")
        return pred if pred is not None else before
    good = pred if pred is not None else before  # seeded with the predecessor's stored chain CRC and term
    data_off = window[0].pos - seg.start
    raw = ops.pread(seg.data_fd, window[-1].pos + window[-1].size - window[0].pos, data_off)
    count, end, chain, term = first, data_off, good.chain, good.term
    for rec in window:
        try:
            size, entry_term, _kind, entry_chain, _body_crc, _len = check_entry(
                raw, end - data_off, len(raw) - (end - data_off), index=rec.entry_index, pos=rec.pos, prev_chain=chain
            )
            if size != rec.size or entry_term != rec.term:
                raise ValueError(f"header (size {size}, term {entry_term}) disagrees with its index record")
            if entry_term < term:
                raise ValueError(f"term {entry_term} below the previous {term}")
        except ValueError as exc:
            report.note(f"{seg.data_path}: entry {rec.entry_index} at byte {rec.pos - seg.start}: {exc}; cut here")
            break
        report.entries_checked += 1
        count, end, chain, term = count + 1, end + size, entry_chain, entry_term
    return _Good(count, end, chain, term)


def _recover_tail(
    seg: Segment, ops: FileOps, chain0: int, term0: int, report: RecoveryReport, ckpt: Checkpoint | None
) -> None:
    """Steps 1-3 of the tail procedure (module docstring) on `seg`, seeded with the chain and term before its
    first entry; the caller does step 4 (an emptied segment is deleted and the previous one recovered)."""
    assert seg.data_fd is not None and seg.index_fd is not None
    file_len = ops.size(seg.data_fd)
    index_len = ops.size(seg.index_fd)
    before = _Good(0, 0, chain0, term0)
    # 1. the index records to trust
    first, trusted = _trusted_records(seg, ops, file_len)
    indexed = first + len(trusted)  # entries the trusted index records cover
    # 2. the last of them (covering >= TAIL_VERIFY_BYTES) are re-checked, or every entry after the checkpoint
    good = before
    if trusted:
        v = len(trusted) - 1
        last_end = trusted[-1].pos + trusted[-1].size
        while v > 0 and last_end - trusted[v].pos < TAIL_VERIFY_BYTES:
            v -= 1
        at_checkpoint = _checkpoint_seed(seg, ops, ckpt, first + v, file_len, chain0, term0)
        if at_checkpoint is not None:  # un-fsynced data reaches further back than the window: check all of it
            good = at_checkpoint
            report.bytes_after_checkpoint = file_len - good.end
        else:
            good = _recheck(seg, ops, file_len, trusted[v:], first + v, before, report)
    # 3. scan the data past the last good entry, rebuilding its index records; cut at the first bad one
    scan = _scan(seg, ops, seg.data_fd, good.end, seg.first_index + good.entries, good.chain, good.term, file_len)
    report.entries_checked += scan.count
    if scan.reason is not None:
        report.note(f"{seg.data_path}: {scan.reason}; cut at byte {scan.end}")
    if scan.count:
        report.index_records_rebuilt += scan.count
    new_count = good.entries + scan.count
    changed = False
    if index_len != new_count * INDEX_SIZE or scan.count:
        ops.truncate(seg.index_fd, good.entries * INDEX_SIZE)
        if scan.records:
            ops.pwrite(seg.index_fd, scan.records, good.entries * INDEX_SIZE)
        changed = True
    if file_len != scan.end:
        report.data_bytes_cut += file_len - scan.end
        ops.truncate(seg.data_fd, scan.end)
        changed = True
    if ckpt is not None and ckpt.start == seg.start and scan.end < ckpt.data_len:
        durable_until = max(seg.first_index + ckpt.count - 1, seg.first_index + indexed - 1)
        report.damage(
            seg.first_index + new_count,
            durable_until,
            f"{seg.data_path}: entries from {seg.first_index + new_count} were cut at byte {scan.end}, inside the"
            f" {ckpt.data_len} bytes ({ckpt.count} entries) the flush checkpoint recorded as fsynced",
        )
    if changed:
        ops.datasync(seg.data_fd)
        ops.datasync(seg.index_fd)
    seg.count, seg.data_len, seg.last_chain, seg.last_term = new_count, scan.end, scan.chain, scan.term


def _last_index_of(directory: str, ops: FileOps, starts: list[int]) -> int:
    """The index the last of `starts`' index files ends at (by its last record), or 0 when unreadable."""
    for start in reversed(starts):
        path = os.path.join(directory, INDEX_DIR, Segment(directory, start, 0).name)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size // INDEX_SIZE
                if size:
                    f.seek((size - 1) * INDEX_SIZE)
                    magic, _pos, _size, idx, _term = INDEX.unpack(f.read(INDEX_SIZE))
                    if magic == INDEX_MAGIC:
                        return int(idx)
        except OSError:
            continue
    return 0


def _cut_closed(
    directory: str, ops: FileOps, seg: Segment, scan: _Scan, later: list[int], report: RecoveryReport
) -> None:
    """A closed segment is invalid before its end (a flipped bit, a missing later segment): keep its valid
    prefix, drop every later segment, and report the entries lost as durable damage (closed segments were
    fsynced at rollover: they are not a torn tail)."""
    assert seg.data_fd is not None and seg.index_fd is not None
    known = _last_index_of(directory, ops, later)
    first_lost = seg.first_index + scan.count
    why = scan.reason or f"its entries end at byte {scan.end}, where no next segment starts"
    for start in later:
        Segment(directory, start, 0).remove_files(ops)
        report.segments_deleted.append(Segment(directory, start, 0).name)
    ops.truncate(seg.data_fd, scan.end)
    ops.truncate(seg.index_fd, 0)
    ops.pwrite(seg.index_fd, scan.records, 0)
    ops.datasync(seg.data_fd)
    ops.datasync(seg.index_fd)
    for sub in (DATA_DIR, INDEX_DIR):
        ops.fsync_dir(os.path.join(directory, sub))
    report.damage(
        first_lost,
        max(known, first_lost),
        f"{seg.data_path}: a closed (fsynced) segment is invalid before its end ({why}); cut at entry"
        f" {first_lost} with {len(later)} later segment(s)",
    )


def recover(
    directory: str, ops: FileOps, keep_open: int, *, verify_closed: bool = False
) -> tuple[Base, list[Segment], RecoveryReport]:
    """Open (creating if needed) the store in `directory`: its base and its segments, the last `keep_open` of
    them with open file handles (older ones are closed as soon as they are checked: no fd per segment).

    `verify_closed`: check every entry of every closed segment (reads the whole log once) and rebuild any
    index that disagrees with its data; a closed segment invalid before its end is cut there, with every
    later segment, and reported as durable damage, instead of refusing to open (`CorruptStoreError`)."""
    report = RecoveryReport()
    for sub in (DATA_DIR, INDEX_DIR):
        os.makedirs(os.path.join(directory, sub), DIR_MODE, exist_ok=True)
    base = read_base(directory)
    ckpt = read_checkpoint(directory)
    starts = list_segments(directory)
    for name in os.listdir(os.path.join(directory, INDEX_DIR)):
        if _NAME.match(name) and int(name) not in starts:
            ops.remove(os.path.join(directory, INDEX_DIR, name))  # an orphan index: its data is gone
    below = [s for s in starts if s < base.pos]  # compacted, but deleted only after the meta write
    starts = starts[len(below) :]
    if starts and starts[0] != base.pos:  # validate before deleting anything
        raise CorruptStoreError(
            f"{directory}: the first segment starts at byte {starts[0]} but the log's base ends at {base.pos}"
        )
    for start in below:
        seg = Segment(directory, start, 0)
        seg.remove_files(ops)
        report.segments_deleted.append(seg.name)
    segs: list[Segment] = []
    seeds: list[tuple[int, int]] = []
    chain, term, index = base.chain, base.term, base.index
    try:
        for k, start in enumerate(starts):
            seg = Segment(directory, start, index + 1)
            seg.open_fds(ops, create=True)
            segs.append(seg)
            seeds.append((chain, term))
            assert seg.data_fd is not None
            seg.mtime = os.fstat(seg.data_fd).st_mtime
            closed = k < len(starts) - 1
            if closed and verify_closed:
                scan = _scan(seg, ops, seg.data_fd, 0, seg.first_index, chain, term, ops.size(seg.data_fd))
                if scan.end != starts[k + 1] - start:
                    _cut_closed(directory, ops, seg, scan, starts[k + 1 :], report)
                    del starts[k + 1 :]
                    closed = False  # now the last segment: the tail procedure below checks it again
                else:
                    assert seg.index_fd is not None
                    if ops.pread(seg.index_fd, ops.size(seg.index_fd) + 1, 0) != bytes(scan.records):
                        ops.truncate(seg.index_fd, 0)
                        ops.pwrite(seg.index_fd, scan.records, 0)
                        ops.datasync(seg.index_fd)
                        report.index_records_rebuilt += scan.count
                        report.note(f"{seg.index_path}: index rebuilt from data ({scan.count} entries)")
                    seg.count, seg.data_len, seg.last_chain, seg.last_term = (
                        scan.count, scan.end, scan.chain, scan.term,
                    )  # fmt: skip
            elif closed and not _check_closed(seg, ops, starts[k + 1] - start):
                scan = _scan(seg, ops, seg.data_fd, 0, seg.first_index, chain, term, ops.size(seg.data_fd))
                if scan.end != starts[k + 1] - start:
                    why = scan.reason or f"its entries end at byte {scan.end}, the next one at {starts[k + 1] - start}"
                    raise CorruptStoreError(
                        f"{seg.data_path}: an older segment is invalid before its end ({why});"
                        " run `dledger log verify` and repair by hand"
                    )
                assert seg.index_fd is not None
                ops.truncate(seg.index_fd, 0)
                ops.pwrite(seg.index_fd, scan.records, 0)
                ops.datasync(seg.index_fd)
                report.index_records_rebuilt += scan.count
                report.note(f"{seg.index_path}: index rebuilt from data ({scan.count} entries)")
                seg.count, seg.data_len, seg.last_chain, seg.last_term = scan.count, scan.end, scan.chain, scan.term
            if closed:
                chain, term, index = seg.last_chain, seg.last_term, seg.last_index
            if k < len(starts) - keep_open:
                seg.close_fds(ops)
        while segs:
            seg = segs[-1]
            if not seg.fds_open:
                seg.open_fds(ops)
            _recover_tail(seg, ops, seeds[-1][0], seeds[-1][1], report, ckpt)
            if seg.count:
                break
            segs.pop()
            seeds.pop()
            seg.remove_files(ops)
            report.segments_deleted.append(seg.name)
    except BaseException:
        for seg in segs:
            seg.close_fds(ops)
        raise
    log_end = segs[-1].end if segs else base.pos
    log_last = segs[-1].last_index if segs else base.index
    if ckpt is not None and ckpt.count and ckpt.start >= log_end and (not starts or ckpt.start > starts[-1]):
        # the checkpoint describes a segment past the log's end: its fsynced entries were lost (a deleted file)
        report.damage(
            log_last + 1,
            log_last + ckpt.count,
            f"{directory}: the flush checkpoint records {ckpt.count} fsynced entries in segment"
            f" {ckpt.start:0{NAME_DIGITS}d}, which is missing",
        )
    try:
        # After a kill -9 the tail may sit in the page cache only: make it durable now (once per open, one
        # segment: older ones were fsynced at rollover), and the directories that name the files, before
        # `flushed_*` claim it. This also makes a brand-new store's data/ and index/ durable in the store dir.
        if segs:
            last = segs[-1]
            assert last.data_fd is not None and last.index_fd is not None
            ops.datasync(last.data_fd)
            ops.datasync(last.index_fd)
        for sub in (DATA_DIR, INDEX_DIR):
            ops.fsync_dir(os.path.join(directory, sub))
        # the checkpoint file's name too (empty until the log writes it: ignored), so that fsyncing it counts
        os.close(os.open(os.path.join(directory, CHECKPOINT_NAME), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        ops.fsync_dir(directory)
    except BaseException:
        for seg in segs:
            seg.close_fds(ops)
        raise
    for seg in segs:
        seg.flushed_data, seg.flushed_index = seg.data_len, seg.count
    return base, segs, report
