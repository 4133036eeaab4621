"""Drop-behind: the flusher evicts durable segment data older than the newest `drop_behind_bytes` from the page
cache, in whole MiB runs, each byte once; evicted data still reads back; sync mode and async mode alike."""

from __future__ import annotations

import pathlib
import time

import pytest

from dledger.commitlog import FileOps, SegmentedLog
from tests.commitlog.conftest import entries

MiB = 1 << 20


class DropRecordingOps(FileOps):
    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[tuple[int, int, int]] = []  # (fd, offset, length)

    def drop_cache(self, fd: int, offset: int, length: int) -> None:
        self.dropped.append((fd, offset, length))
        super().drop_cache(fd, offset, length)


@pytest.mark.parametrize("flush", ["async", "sync"])
def test_durable_data_behind_the_window_is_evicted_once_in_whole_mib_runs(tmp_path: pathlib.Path, flush: str) -> None:
    ops = DropRecordingOps()
    log = SegmentedLog.open(tmp_path, flush=flush, drop_behind_bytes=2 * MiB, file_ops=ops)  # type: ignore[arg-type]
    try:
        batch = 256  # entries of 4 KiB: 1 MiB (and headers) per batch
        log.append(entries(1, 1 + 3 * batch, size=4096))
        log.sync()
        (fd, offset, length), *more = ops.dropped
        assert not more and fd == log._segs[-1].data_fd
        durable = log.durable_lengths()[log.segments()[-1].name][0]
        assert offset == 0 and length == (durable - 2 * MiB) // MiB * MiB == MiB
        log.sync()  # nothing new is durable: nothing more to evict
        assert len(ops.dropped) == 1
        log.append(entries(1 + 3 * batch, 1 + 6 * batch, size=4096))
        log.sync()
        durable = log.durable_lengths()[log.segments()[-1].name][0]
        runs = ops.dropped
        assert [r[1] for r in runs] == [0, MiB]  # the second run starts where the first ended
        assert runs[1][1] + runs[1][2] == (durable - 2 * MiB) // MiB * MiB
        got = log.read(1, 1 + 6 * batch, 1 << 30)  # evicted bytes come back from the disk
        assert got == entries(1, 1 + 6 * batch, size=4096)
    finally:
        log.close()


def test_zero_keeps_everything_and_a_negative_window_is_refused(tmp_path: pathlib.Path) -> None:
    ops = DropRecordingOps()
    log = SegmentedLog.open(tmp_path / "a", drop_behind_bytes=0, file_ops=ops)  # type: ignore[arg-type]
    try:
        log.append(entries(1, 2000, size=4096))
        log.sync()
        assert ops.dropped == []
    finally:
        log.close()
    with pytest.raises(ValueError, match="drop_behind_bytes"):
        SegmentedLog.open(tmp_path / "b", drop_behind_bytes=-1)


def test_the_flusher_evicts_in_the_background(tmp_path: pathlib.Path) -> None:
    ops = DropRecordingOps()
    log = SegmentedLog.open(tmp_path, flush_interval_ms=5, drop_behind_bytes=MiB, file_ops=ops)  # type: ignore[arg-type]
    try:
        log.append(entries(1, 1000, size=4096))  # ~4 MiB, never synced by this thread
        deadline = time.monotonic() + 10
        while not ops.dropped and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ops.dropped and ops.dropped[0][1] == 0 and ops.dropped[0][2] % MiB == 0
    finally:
        log.close()
