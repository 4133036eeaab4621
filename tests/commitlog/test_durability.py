"""Durability bookkeeping and failures: rollover syncs, lost un-fsynced bytes, failed fsyncs, the store lock."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import time
from collections.abc import Callable

import pytest

from dledger.commitlog import DiskFullError, FileOps, LogClosedError, SegmentedLog, StoreInUseError
from dledger.commitlog.checkpoint import Checkpoint, read_checkpoint
from dledger.commitlog.verify import verify_store
from tests.commitlog.conftest import NoSyncOps, PowerLossOps, data_files, entries


class FailingSync(FileOps):
    def __init__(self) -> None:
        super().__init__()
        self.fail_sync = False

    def datasync(self, fd: int) -> None:
        if self.fail_sync:
            raise OSError(errno.EIO, "injected fsync failure")
        super().datasync(fd)


def test_rollover_makes_the_closed_segment_durable(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=300, flush="async", flush_interval_ms=60_000) as log:
        log.append(entries(1, 20, size=52))  # 100-byte entries, 3 per segment
        lengths = log.durable_lengths()
        infos = log.segments()
        for info in infos[:-1]:
            assert lengths[info.name] == (info.bytes, 3 * 32)
        assert lengths[infos[-1].name][0] <= infos[-1].bytes


@pytest.mark.parametrize("flush", ["async", "sync"])
def test_losing_every_unsynced_byte_keeps_at_least_the_durable_prefix(tmp_path: pathlib.Path, flush: str) -> None:
    """Simulate a power cut: copy the store with each file cut to its fsynced length, then reopen the copy."""
    want = entries(1, 200, size=30)
    crash = tmp_path / "crash"
    ops = PowerLossOps(tmp_path / "s")
    with SegmentedLog.open(
        tmp_path / "s",
        segment_bytes=1000,
        flush=flush,  # type: ignore[arg-type]
        flush_interval_ms=60_000,
        file_ops=ops,
    ) as log:
        for k in range(0, 147, 7):
            log.append(want[k : k + 7])
        log.sync()
        log.append(want[147:199])  # not synced in async mode
        durable = log.durable_index
        closed = log.segments()[-2].last_index  # fsynced when the log rolled over past it
        ops.crash_image(crash)
    assert durable == (199 if flush == "sync" else closed) and closed > 147
    with SegmentedLog.open(crash, segment_bytes=1000) as log:
        assert log.last_index >= durable
        assert log.read(1, log.last_index + 1) == want[: log.last_index]
    assert verify_store(str(crash)).clean


def test_a_failed_background_fsync_refuses_further_writes(tmp_path: pathlib.Path) -> None:
    ops = FailingSync()
    log = SegmentedLog.open(tmp_path, flush="async", flush_interval_ms=5, file_ops=ops)
    log.append(entries(1, 5))
    ops.fail_sync = True
    log.append(entries(5, 6))
    deadline = time.monotonic() + 10
    while log._flusher.error is None and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(LogClosedError, match="reopen"):
        log.append(entries(6, 7))
    with pytest.raises(LogClosedError):
        log.sync()
    log.close()
    ops.fail_sync = False
    with SegmentedLog.open(tmp_path) as again:
        assert again.read(1, again.last_index + 1) == entries(1, again.last_index + 1)
        assert again.last_index >= 4


def test_a_failed_fsync_in_sync_mode_fails_the_append_and_poisons_the_log(tmp_path: pathlib.Path) -> None:
    """After a failed fsync the kernel may have marked the lost pages clean (fsyncgate): a retry could succeed
    without the data, so the log refuses service until it is reopened (and recovery re-checks the tail)."""
    ops = FailingSync()
    with SegmentedLog.open(tmp_path, flush="sync", file_ops=ops) as log:
        log.append(entries(1, 5))
        ops.fail_sync = True
        with pytest.raises(OSError, match="injected"):
            log.append(entries(5, 9))
        assert log.last_index == 4 and log.durable_index == 4
        ops.fail_sync = False
        with pytest.raises(LogClosedError, match="reopen"):
            log.append(entries(5, 9))
    with SegmentedLog.open(tmp_path, flush="sync") as log:
        assert log.last_index == 4
        log.append(entries(5, 9))
        assert log.read(1, 9) == entries(1, 9)


@pytest.mark.parametrize("call", ["sync", "compact_before", "close"])
def test_a_failed_fsync_anywhere_poisons_the_log(tmp_path: pathlib.Path, call: str) -> None:
    """Review finding 3: sync(), compact_before and close treat a failed fsync as fatal, like the flusher."""
    ops = FailingSync()
    log = SegmentedLog.open(tmp_path, segment_bytes=300, flush_interval_ms=60_000, file_ops=ops)
    log.append(entries(1, 20, size=52))  # several segments
    log.append(entries(20, 21, size=52))  # un-fsynced bytes in the last one
    ops.fail_sync = True
    with pytest.raises(OSError, match="injected"):
        getattr(log, call)(*([10] if call == "compact_before" else []))
    ops.fail_sync = False
    if call != "close":
        with pytest.raises(LogClosedError, match="reopen"):
            log.sync()  # a retry must not report success
        with pytest.raises(LogClosedError, match="reopen"):
            log.append(entries(21, 22))
        assert log.durable_index < 20
    log.close()
    with SegmentedLog.open(tmp_path, segment_bytes=300) as again:
        assert again.read(again.first_index, again.last_index + 1) == entries(
            again.first_index, again.last_index + 1, size=52
        )


def test_a_store_opens_for_one_writer_at_a_time(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path):
        with pytest.raises(StoreInUseError, match="already open"):
            SegmentedLog.open(tmp_path)
        assert verify_store(str(tmp_path)).clean  # readers (verify, dump) need no lock
    with SegmentedLog.open(tmp_path) as log:  # released on close
        assert log.last_index == 0
    assert (tmp_path / "LOCK").exists() and os.path.isdir(tmp_path / "data")


def test_a_truncation_is_durable_before_the_entries_that_replace_it(tmp_path: pathlib.Path) -> None:
    old = entries(1, 60, term=1, size=30)
    new = entries(31, 45, term=2, size=30)
    ops = PowerLossOps(tmp_path / "s")
    with SegmentedLog.open(tmp_path / "s", segment_bytes=1000, flush_interval_ms=60_000, file_ops=ops) as log:
        log.append(old)
        log.sync()
        log.truncate_after(30)
        assert log.durable_index == 30
        log.append(new)  # async, not synced: lost in the cut
        ops.crash_image(tmp_path / "crash")
    with SegmentedLog.open(tmp_path / "crash", segment_bytes=1000) as log:
        assert 30 <= log.last_index <= 44
        assert log.read(1, log.last_index + 1) == (old[:30] + new)[: log.last_index]  # never an old entry > 30


def test_a_hole_deep_in_unflushed_data_is_cut_at_recovery(tmp_path: pathlib.Path) -> None:
    """A power cut can lose any page written after the last fsync, far before the end: the checkpoint lets
    recovery check everything written since the last flush, not just the last megabyte."""
    size = 4000
    want = entries(1, 1001, size=size)  # ~4 MB, more than the tail window
    with SegmentedLog.open(tmp_path, flush_interval_ms=60_000) as log:
        log.append(want[:100])
        log.sync()  # entries 1..100 durable; 101..1000 only in the page cache
        for k in range(100, 1000, 50):
            log.append(want[k : k + 50])
    # the checkpoint file was rewritten at close; put back the one from before (as a crash would leave it)
    with SegmentedLog.open(tmp_path / "again", flush_interval_ms=60_000) as other:
        other.append(want[:100])
        other.sync()
        stale = (tmp_path / "again" / "checkpoint").read_bytes()
    (tmp_path / "checkpoint").write_bytes(stale)
    data = data_files(tmp_path)[0]
    raw = bytearray(data.read_bytes())
    hole = 200 * (size + 48) + 10  # inside entry 201: a lost page of zeros, 3 MB before the end
    raw[hole : hole + 4096] = bytes(4096)
    data.write_bytes(raw)
    with SegmentedLog.open(tmp_path) as log:
        assert log.last_index == 200
        assert log.read(1, 201) == want[:200]
        assert log.recovery.bytes_after_checkpoint > 3_000_000
    assert verify_store(str(tmp_path)).clean


@pytest.mark.parametrize("flush", ["async", "sync"])
def test_reopening_after_a_kill_makes_the_recovered_tail_durable(tmp_path: pathlib.Path, flush: str) -> None:
    """Review finding 1: after kill -9 the recovered entries may be in the page cache only. Reopening must
    make them durable before `durable_index` claims them (a restarted sync-mode follower acknowledges on it)."""
    store = tmp_path / "s"
    with SegmentedLog.open(store, file_ops=NoSyncOps()) as log:  # the killed process (one segment, so no
        log.append(entries(1, 51, size=30))  # rollover fsync is skipped): its writes are in the page cache only
    ops = PowerLossOps(store)  # a power cut now would lose every byte: nothing is durable yet
    with SegmentedLog.open(store, flush=flush, file_ops=ops) as log:  # type: ignore[arg-type]
        assert log.durable_index == 50
        log.sync()
        ops.crash_image(tmp_path / "crash")
    with SegmentedLog.open(tmp_path / "crash") as log:
        assert log.last_index == 50
        assert log.read(1, 51) == entries(1, 51, size=30)


def test_a_new_store_is_durable_in_its_directory(tmp_path: pathlib.Path) -> None:
    """Review finding 11: data/ and index/ of a brand-new store are made durable in the store directory."""
    ops = PowerLossOps(tmp_path / "s")
    with SegmentedLog.open(tmp_path / "s", segment_bytes=1000, flush="sync", file_ops=ops) as log:
        log.append(entries(1, 4))
        ops.crash_image(tmp_path / "crash")
    with SegmentedLog.open(tmp_path / "crash") as log:
        assert log.read(1, 4) == entries(1, 4)


def _fail_from_segment(start: int) -> Callable[[str, str], int | None]:
    """An injected ENOSPC for data writes into segments starting at or after byte `start`."""
    return lambda kind, path: (
        errno.ENOSPC if kind == "pwrite" and "/data/" in path and int(os.path.basename(path)) >= start else None
    )


@pytest.mark.parametrize("then_append", [False, True])
def test_a_failed_rolling_append_is_rolled_back_durably(tmp_path: pathlib.Path, then_append: bool) -> None:
    """Review finding 2: the failed batch's first chunk was fsynced at rollover and the new segment's name made
    durable; the roll-back must be durable too, so a power cut neither resurrects entries of the failed call
    nor leaves a removed segment behind a later acknowledged entry (a store that does not open)."""
    store = tmp_path / "s"
    ops = PowerLossOps(store)
    with SegmentedLog.open(store, segment_bytes=300, flush="sync", file_ops=ops) as log:
        log.append(entries(1, 8, size=52))  # 100-byte entries: [1-3] [4-6] [7]
        ops.fail = _fail_from_segment(900)  # 8, 9 go to segment 600, then 900 fails
        with pytest.raises(DiskFullError):
            log.append(entries(8, 15, size=52))
        ops.fail = lambda kind, path: None
        assert log.last_index == 7
        want = entries(1, 8, size=52)
        if then_append:
            want.append(entries(8, 9, term=2, size=52)[0])
            log.append(want[-1:])  # sync mode: durable when append returns
        ops.crash_image(tmp_path / "crash")
    with SegmentedLog.open(tmp_path / "crash", segment_bytes=300) as log:
        assert log.read(1, log.last_index + 1) == want
    assert verify_store(str(tmp_path / "crash")).clean


def test_a_rolled_back_rollover_restores_the_checkpoint(tmp_path: pathlib.Path) -> None:
    """Review finding 4: after a failed append that had started a new segment, the checkpoint names the last
    published segment again, so later flushes keep recording what of it is fsynced."""
    ops = PowerLossOps(tmp_path)
    with SegmentedLog.open(tmp_path, segment_bytes=1000, flush_interval_ms=60_000, file_ops=ops) as log:
        log.append(entries(1, 10, size=52))  # 900 bytes in segment 0
        log.sync()
        ops.fail = _fail_from_segment(1000)
        with pytest.raises(DiskFullError):
            log.append(entries(10, 12, size=52))  # 10 fits, 11 opens segment 1000 and fails
        ops.fail = lambda kind, path: None
        assert read_checkpoint(str(tmp_path)) == Checkpoint(0, 900, 9)
        log.append(entries(10, 11, size=52))
        log.sync()
        assert read_checkpoint(str(tmp_path)) == Checkpoint(0, 1000, 10)


def test_a_truncation_makes_its_checkpoint_durable(tmp_path: pathlib.Path) -> None:
    """Review finding 6: a checkpoint from before a truncation describes entries that were replaced; if a power
    cut left it on disk, recovery would skip checking the re-appended, un-fsynced entries before it and keep a
    hole in them. Truncation fsyncs its checkpoint, so the oldest one a power cut can leave is that one."""
    size = 4000
    old = entries(1, 1001, term=1, size=size)
    new = entries(501, 1001, term=2, size=size)
    ops = PowerLossOps(tmp_path / "s")
    with SegmentedLog.open(tmp_path / "s", flush_interval_ms=600_000, file_ops=ops) as log:
        log.append(old[:700])
        log.sync()  # a checkpoint at 700 entries
        log.append(old[700:])
        log.truncate_after(500)
        for k in range(0, 500, 50):
            log.append(new[k : k + 50])  # page cache only
        ops.crash_image(tmp_path / "crash")
    # the un-fsynced pages were written back (the index's too), except one in entry 601
    name = f"{0:020d}"
    shutil.copy(tmp_path / "s" / "index" / name, tmp_path / "crash" / "index" / name)
    raw = bytearray((tmp_path / "s" / "data" / name).read_bytes())
    hole = 600 * (size + 48) + 10
    raw[hole : hole + 4096] = bytes(4096)
    (tmp_path / "crash" / "data" / name).write_bytes(raw)
    with SegmentedLog.open(tmp_path / "crash") as log:
        assert log.last_index == 600
        assert log.read(1, 601) == old[:500] + new[:100]


@pytest.mark.parametrize(
    ("call", "kind"), [("truncate_dir", "fsync_dir"), ("truncate_cut", "datasync"), ("compact", "fsync_dir")]
)
def test_a_failure_partway_through_truncate_or_compact_poisons_the_log(
    tmp_path: pathlib.Path, call: str, kind: str
) -> None:
    """Review finding 7: an I/O error after truncate_after / compact_before changed files leaves disk and memory
    apart: the log refuses service (instead of AssertionError, FileNotFoundError or writing past a hole), and
    reopening recovers a valid log."""
    ops = PowerLossOps(tmp_path)
    log = SegmentedLog.open(tmp_path, segment_bytes=300, flush_interval_ms=60_000, file_ops=ops)
    log.append(entries(1, 11, size=52))  # [1-3] [4-6] [7-9] [10]
    log.sync()
    ops.fail = lambda k, path: errno.EIO if k == kind else None
    with pytest.raises(OSError, match="Input/output"):
        if call == "truncate_dir":
            log.truncate_after(2)  # removes segments, then the directory fsync fails
        elif call == "truncate_cut":
            log.truncate_after(11 - 3)  # cuts segment [7-9], then its fdatasync fails
        else:
            log.compact_before(7)  # writes meta, deletes, then the directory fsync fails
    ops.fail = lambda k, path: None
    for attempt in (lambda: log.read(1, 2), lambda: log.append(entries(11, 12, size=52)), log.sync):
        with pytest.raises(LogClosedError, match="reopen"):
            attempt()
    log.close()
    with SegmentedLog.open(tmp_path, segment_bytes=300) as again:
        assert again.read(again.first_index, again.last_index + 1) == entries(
            again.first_index, again.last_index + 1, size=52
        )
    assert verify_store(str(tmp_path)).clean
