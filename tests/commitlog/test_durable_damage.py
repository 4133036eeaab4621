"""Corruption is not a torn tail: recovery reports damage to entries the flush checkpoint recorded as
fsynced (`RecoveryReport.durable_damage`) apart from cutting an un-fsynced torn tail, and in sync mode the
checkpoint follows every append (no fsync of its own), so it covers what was acknowledged."""

from __future__ import annotations

import os
import pathlib
import shutil

from dledger.commitlog import Entry, SegmentedLog
from dledger.commitlog.checkpoint import read_checkpoint
from dledger.commitlog.verify import verify_store
from tests.commitlog.conftest import NoSyncOps, data_files, entries


def _kill(src: pathlib.Path, dst: pathlib.Path) -> None:
    """What a kill -9 leaves of an open store: its files as they are (the page cache survives)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))


def test_sync_mode_checkpoint_covers_every_append_without_a_flush(tmp_path: pathlib.Path) -> None:
    ops = NoSyncOps()
    log = SegmentedLog.open(tmp_path / "s", flush="sync", flush_interval_ms=3_600_000, file_ops=ops)
    try:
        log.append(entries(1, 5))  # creates the segment (directory fsyncs)
        for k in range(5, 41, 4):
            before = ops.syncs
            log.append(entries(k, k + 4))
            assert ops.syncs - before == 1  # the batch's data fdatasync only: the checkpoint adds none
        cp = read_checkpoint(str(tmp_path / "s"))
        assert cp is not None and cp.count == 40 and cp.data_len == data_files(tmp_path / "s")[0].stat().st_size
    finally:
        log.close()


def test_a_flipped_bit_in_fsynced_entries_is_reported_as_corruption(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "live"
    log = SegmentedLog.open(src, flush="sync", flush_interval_ms=3_600_000, file_ops=NoSyncOps())
    log.append(entries(1, 101))
    _kill(src, tmp_path / "s")
    log.close()
    path = data_files(tmp_path / "s")[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(raw)
    with SegmentedLog.open(tmp_path / "s", file_ops=NoSyncOps()) as reopened:
        damage = reopened.recovery.durable_damage
        assert damage is not None
        first_lost, until = damage
        assert until == 100 and first_lost == reopened.last_index + 1 and first_lost < 100
        assert any("flush checkpoint recorded as fsynced" in p for p in reopened.recovery.problems)


def test_a_torn_unsynced_tail_is_not_corruption(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "live"
    log = SegmentedLog.open(src, flush="async", flush_interval_ms=3_600_000, file_ops=NoSyncOps())
    log.append(entries(1, 51))
    log.sync()
    log.append(entries(51, 101))  # written, not flushed: past the checkpoint
    _kill(src, tmp_path / "s")
    log.close()
    path = data_files(tmp_path / "s")[0]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 30])
    with SegmentedLog.open(tmp_path / "s", file_ops=NoSyncOps()) as reopened:
        assert reopened.recovery.durable_damage is None
        assert reopened.last_index == 99 and reopened.recovery.data_bytes_cut > 0


def test_a_deleted_last_segment_is_reported_as_lost_durable_entries(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "live"
    log = SegmentedLog.open(src, flush="sync", segment_bytes=1000, flush_interval_ms=3_600_000, file_ops=NoSyncOps())
    log.append(entries(1, 101))
    _kill(src, tmp_path / "s")
    log.close()
    last_data = data_files(tmp_path / "s")[-1]
    last_data.unlink()
    (tmp_path / "s" / "index" / last_data.name).unlink()
    with SegmentedLog.open(tmp_path / "s", file_ops=NoSyncOps()) as reopened:
        assert reopened.last_index < 100
        assert reopened.recovery.durable_damage is not None
        first_lost, until = reopened.recovery.durable_damage
        assert first_lost == reopened.last_index + 1 and until >= 100
        reopened.append([Entry(reopened.last_index + 1, 3, b"x")])


def _multi(tmp_path: pathlib.Path) -> pathlib.Path:
    src = tmp_path / "live"
    log = SegmentedLog.open(src, flush="sync", segment_bytes=1000, flush_interval_ms=3_600_000, file_ops=NoSyncOps())
    log.append(entries(1, 201))
    _kill(src, tmp_path / "s")
    log.close()
    return tmp_path / "s"


def test_a_flipped_bit_in_a_closed_segment_is_cut_there_and_reported_when_verifying(tmp_path: pathlib.Path) -> None:
    store = _multi(tmp_path)
    files = data_files(store)
    assert len(files) > 4
    raw = bytearray(files[2].read_bytes())
    raw[len(raw) // 2] ^= 0x04
    files[2].write_bytes(raw)
    with SegmentedLog.open(store, file_ops=NoSyncOps(), verify_closed=True) as reopened:
        damage = reopened.recovery.durable_damage
        assert damage is not None and damage == (reopened.last_index + 1, 200)
        assert reopened.read(1, reopened.last_index + 1) == entries(1, reopened.last_index + 1)
        assert len(data_files(store)) == 3
    assert verify_store(str(store)).clean


def test_a_missing_closed_segment_is_cut_there_and_reported_when_verifying(tmp_path: pathlib.Path) -> None:
    store = _multi(tmp_path)
    gone = data_files(store)[2]
    gone.unlink()
    (store / "index" / gone.name).unlink()
    with SegmentedLog.open(store, file_ops=NoSyncOps(), verify_closed=True) as reopened:
        damage = reopened.recovery.durable_damage
        assert damage is not None and damage[0] == reopened.last_index + 1 and damage[1] == 200
        assert reopened.read(1, reopened.last_index + 1) == entries(1, reopened.last_index + 1)


def test_a_flipped_index_record_of_a_closed_segment_is_rebuilt_from_the_data(tmp_path: pathlib.Path) -> None:
    store = _multi(tmp_path)
    path = sorted((store / "index").iterdir())[1]
    raw = bytearray(path.read_bytes())
    raw[32 + 9] ^= 0x01  # the second record's position
    path.write_bytes(raw)
    with SegmentedLog.open(store, file_ops=NoSyncOps(), verify_closed=True) as reopened:
        assert reopened.recovery.durable_damage is None and reopened.recovery.index_records_rebuilt > 0
        assert reopened.read(1, 201) == entries(1, 201)
    assert verify_store(str(store)).clean


def test_a_segment_deleted_under_the_running_log_is_noticed_at_the_next_flush(tmp_path: pathlib.Path) -> None:
    import pytest

    from dledger.commitlog import LogClosedError
    from dledger.commitlog.errors import CorruptStoreError

    log = SegmentedLog.open(tmp_path / "s", flush="sync", flush_interval_ms=3_600_000, file_ops=NoSyncOps())
    try:
        log.append(entries(1, 11))
        data_files(tmp_path / "s")[-1].unlink()
        with pytest.raises((CorruptStoreError, LogClosedError), match="deleted under the running log"):
            log.sync()
        with pytest.raises(LogClosedError):
            log.append(entries(11, 12))
    finally:
        log.close()


class _CutBeforeWrite(NoSyncOps):
    """Cuts the data file it is about to write to right before the write, once: a cut racing an append
    (after the append's size check, before its write)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_to: int | None = None

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        if self.cut_to is not None and offset > self.cut_to:
            os.ftruncate(fd, self.cut_to)
            self.cut_to = None
        super().pwrite(fd, data, offset)


def test_a_cut_racing_an_append_is_noticed_and_not_regrown_over_a_hole(tmp_path: pathlib.Path) -> None:
    import pytest

    from dledger.commitlog import LogClosedError
    from dledger.commitlog.errors import CorruptStoreError

    ops = _CutBeforeWrite()
    log = SegmentedLog.open(tmp_path / "s", flush="sync", flush_interval_ms=3_600_000, file_ops=ops)
    try:
        log.append(entries(1, 41))
        size = data_files(tmp_path / "s")[0].stat().st_size
        ops.cut_to = size // 2  # entries 1..40 are durable and published: half of them go
        log.append(entries(41, 42))  # the write itself succeeds: the cut is not visible to it
        data = data_files(tmp_path / "s")[0].read_bytes()
        assert len(data) < size, "the write regrew the cut file to its old length (over a hole of zeros)"
        with pytest.raises((CorruptStoreError, LogClosedError), match="cut to"):
            log.sync()  # the next flush (or append) finds it: the log refuses service until repaired
        with pytest.raises(LogClosedError):
            log.append(entries(42, 43))
    finally:
        log.close()


def test_bytes_past_the_published_end_are_dropped_before_an_append(tmp_path: pathlib.Path) -> None:
    """The data file is written at its end (`O_APPEND`): bytes past what the log published (none are
    expected) would shift the new entries, so the append drops them first, as a write at the log's own
    offset used to overwrite them."""
    log = SegmentedLog.open(tmp_path / "s", flush="sync", flush_interval_ms=3_600_000, file_ops=NoSyncOps())
    try:
        log.append(entries(1, 11))
        path = data_files(tmp_path / "s")[0]
        size = path.stat().st_size
        with path.open("ab") as f:
            f.write(b"\xff" * 100)
        log.append(entries(11, 21))
        assert log.read(1, 21) == entries(1, 21)
        log.sync()
    finally:
        log.close()
    with SegmentedLog.open(tmp_path / "s", file_ops=NoSyncOps(), verify_closed=True) as reopened:
        assert reopened.read(1, 21) == entries(1, 21) and reopened.recovery.durable_damage is None
    assert path.stat().st_size > size
