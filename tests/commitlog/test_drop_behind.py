"""Drop-behind (dropbehind.py): durable log data older than the log's newest `drop_behind_bytes` is evicted from
the page cache, across segments, in whole MiB runs (whole segments when wholly behind), each byte once; a
segment whose handles close is evicted whole; evicted data reads back; 0 turns it off."""

from __future__ import annotations

import pathlib

import pytest

from dledger.commitlog import FileOps, SegmentedLog
from dledger.commitlog.dropbehind import ALIGN, behind
from dledger.commitlog.log import DEFAULT_DROP_BEHIND_BYTES, DEFAULT_FLUSH_INTERVAL_MS, OPEN_WINDOW
from dledger.commitlog.segment import Segment
from dledger.node.config import NodeConfig
from dledger.node.node import RaftNode
from tests.commitlog.conftest import entries
from tests.support import wait_for

MiB = 1 << 20


class DropRecordingOps(FileOps):
    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[tuple[int, int, int]] = []  # (fd, offset, length)

    def drop_cache(self, fd: int, offset: int, length: int) -> None:
        self.dropped.append((fd, offset, length))
        super().drop_cache(fd, offset, length)


def _seg(start: int, data_len: int, flushed: int, *, dropped: int = 0, open_: bool = True) -> Segment:
    seg = Segment("unused", start, 1)
    seg.data_len, seg.flushed_data, seg.dropped_data = data_len, flushed, dropped
    seg.data_fd = 99 if open_ else None
    return seg


def test_the_window_counts_from_the_end_of_the_whole_log() -> None:
    a = _seg(0, 10 * MiB + 5, 10 * MiB + 5)  # wholly behind: evicted to its (unaligned) end
    b = _seg(10 * MiB + 5, 8 * MiB, 8 * MiB)  # the window starts inside: evicted up to a whole MiB
    c = _seg(18 * MiB + 5, 3 * MiB, 2 * MiB)  # the last one, 1 MiB of it not durable yet
    cut = c.start + c.flushed_data - 4 * MiB  # 16 MiB + 5
    assert behind([a, b, c], 4 * MiB) == [(a, 0, a.data_len), (b, 0, (cut - b.start) // ALIGN * ALIGN)]
    assert (cut - b.start) // ALIGN * ALIGN == 6 * MiB
    b.dropped_data = 6 * MiB
    a.dropped_data = a.data_len
    assert behind([a, b, c], 4 * MiB) == []  # each byte once
    c.flushed_data = 3 * MiB  # one more durable MiB moves the window on by one
    assert behind([a, b, c], 4 * MiB) == [(b, 6 * MiB, 7 * MiB)]


def test_only_durable_bytes_of_open_segments_and_nothing_with_a_zero_window() -> None:
    closed = _seg(0, 4 * MiB, 4 * MiB, open_=False)
    partly = _seg(4 * MiB, 6 * MiB, 2 * MiB + 7)  # not wholly durable: not evicted past its durable bytes
    last = _seg(10 * MiB, 20 * MiB, 20 * MiB)
    assert behind([closed, partly, last], MiB) == [(partly, 0, 2 * MiB), (last, 0, 19 * MiB)]
    assert behind([closed, partly, last], 0) == []
    assert behind([], MiB) == []
    assert behind([_seg(0, 5 * MiB, 5 * MiB)], 8 * MiB) == []  # the whole log fits the window


@pytest.mark.parametrize("flush", ["async", "sync"])
def test_each_flush_evicts_what_fell_behind_and_the_bytes_read_back(tmp_path: pathlib.Path, flush: str) -> None:
    ops = DropRecordingOps()
    log = SegmentedLog.open(tmp_path, flush=flush, drop_behind_bytes=2 * MiB, file_ops=ops)  # type: ignore[arg-type]
    try:
        batch = 256  # entries of 4 KiB: 1 MiB (and headers) per batch
        log.append(entries(1, 1 + 3 * batch, size=4096))
        log.sync()
        assert ops.dropped == [(log._segs[-1].data_fd, 0, MiB)]
        log.sync()  # nothing new is durable: nothing more to evict
        assert len(ops.dropped) == 1
        log.append(entries(1 + 3 * batch, 1 + 6 * batch, size=4096))
        log.sync()
        durable = log.durable_lengths()[log.segments()[-1].name][0]
        assert [(offset, offset + length) for _, offset, length in ops.dropped] == [
            (0, MiB),
            (MiB, (durable - 2 * MiB) // MiB * MiB),
        ]
        assert log.read(1, 1 + 6 * batch, 1 << 30) == entries(1, 1 + 6 * batch, size=4096)
    finally:
        log.close()


def test_segments_behind_the_window_and_closed_ones_are_evicted_whole(tmp_path: pathlib.Path) -> None:
    ops = DropRecordingOps()
    seg_bytes = 256 * 1024
    log = SegmentedLog.open(tmp_path, segment_bytes=seg_bytes, drop_behind_bytes=MiB, file_ops=ops)  # type: ignore[arg-type]
    try:
        n = (OPEN_WINDOW + 8) * seg_bytes // (4096 + 48)
        for lo in range(1, n, 50):
            log.append(entries(lo, min(lo + 50, n), size=4096))
        log.sync()
        segs = log._segs
        assert len(segs) > OPEN_WINDOW
        for seg in segs[:-OPEN_WINDOW]:  # closed at rollover: evicted whole first
            assert not seg.fds_open and seg.dropped_data == seg.data_len
        end = segs[-1].start + segs[-1].flushed_data
        for seg in segs[-OPEN_WINDOW:]:
            if seg.start + seg.data_len <= end - MiB:
                assert seg.dropped_data == seg.data_len
            elif seg.start >= end - MiB:
                assert seg.dropped_data == 0
        evicted = sum(length for _, _, length in ops.dropped)
        assert evicted == sum(seg.dropped_data for seg in segs)  # each byte once
        assert end - evicted <= MiB + seg_bytes  # what is left cached: about the window
        assert log.read(1, n, 1 << 30) == entries(1, n, size=4096)
    finally:
        log.close()


def test_a_truncation_below_the_evicted_bytes_lets_the_rewritten_ones_be_evicted(tmp_path: pathlib.Path) -> None:
    ops = DropRecordingOps()
    log = SegmentedLog.open(tmp_path, drop_behind_bytes=MiB, file_ops=ops)  # type: ignore[arg-type]
    try:
        log.append(entries(1, 1000, size=4096))
        log.sync()
        seg = log._segs[-1]
        assert seg.dropped_data == 2 * MiB
        log.truncate_after(200)  # the log now ends below what was evicted
        cut = seg.data_len
        assert seg.dropped_data == cut < 2 * MiB
        log.append(entries(201, 1000, term=2, size=4096))
        log.sync()
        _, offset, length = ops.dropped[-1]
        assert offset == cut and offset + length == seg.dropped_data == (seg.flushed_data - MiB) // MiB * MiB
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


def test_the_background_flusher_evicts_too(tmp_path: pathlib.Path) -> None:
    ops = DropRecordingOps()
    log = SegmentedLog.open(tmp_path, flush_interval_ms=5, drop_behind_bytes=MiB, file_ops=ops)  # type: ignore[arg-type]
    try:
        log.append(entries(1, 1000, size=4096))  # ~4 MiB, never synced by this thread
        assert wait_for(lambda: ops.dropped)
        assert ops.dropped[0][1] == 0 and ops.dropped[0][2] % MiB == 0
    finally:
        log.close()


def test_a_node_gives_its_log_the_configured_window(tmp_path: pathlib.Path) -> None:
    for window in (0, 3 * MiB):
        config = NodeConfig(self_id="n0", peers={"n0": "127.0.0.1:1"}, store_dir=tmp_path / str(window),
                            drop_behind_bytes=window)  # fmt: skip
        node = RaftNode(config)
        node.open_storage()
        try:
            assert node.log is not None and node.log._drop_behind == window
        finally:
            node._io.shutdown(wait=True)
            node._close_storage()


def test_a_nodes_defaults_are_the_logs() -> None:
    config = NodeConfig(self_id="n0", peers={"n0": "127.0.0.1:1"}, store_dir=pathlib.Path("unused"))
    assert config.drop_behind_bytes == DEFAULT_DROP_BEHIND_BYTES
    assert config.flush_interval_ms == DEFAULT_FLUSH_INTERVAL_MS
