"""`SegmentedLog` behaviour beyond the protocol: files, rollover, limits, reopen, durability, lifetime."""

from __future__ import annotations

import errno
import itertools
import os
import pathlib
import threading
import time

import pytest

from dledger.commitlog import (
    CompactedError,
    Entry,
    EntryTooLargeError,
    FileOps,
    LogClosedError,
    SegmentedLog,
    UnavailableError,
)
from dledger.commitlog.codec import HEADER_SIZE, INDEX_SIZE
from dledger.commitlog.log import OPEN_WINDOW
from dledger.commitlog.segment import Segment
from tests.commitlog.conftest import NoSyncOps, data_files, entries, index_files
from tests.support import wait_for


def test_segments_are_named_by_the_byte_position_of_their_first_entry(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        log.append(entries(1, 40, size=52))  # 100-byte entries: 3 per segment
        infos = log.segments()
    names = [p.name for p in data_files(tmp_path)]
    assert names == [f"{100 * (3 * k):020d}" for k in range(13)]
    assert [p.name for p in index_files(tmp_path)] == names
    assert [(s.first_index, s.last_index, s.bytes) for s in infos][:2] == [(1, 3, 300), (4, 6, 300)]
    assert all(len(n) == 20 for n in names)
    for p in data_files(tmp_path)[:-1]:
        assert p.stat().st_size == 300
    assert (tmp_path / "index" / names[0]).stat().st_size == 3 * INDEX_SIZE


def test_reopen_returns_exactly_what_was_appended(tmp_path: pathlib.Path) -> None:
    want = entries(1, 200, term=1) + entries(200, 300, term=4)
    with SegmentedLog.open(tmp_path, segment_bytes=1000, flush="sync") as log:
        for k in range(0, len(want), 17):
            log.append(want[k : k + 17])
    with SegmentedLog.open(tmp_path, segment_bytes=1000) as log:
        assert (log.first_index, log.last_index) == (1, 299)
        assert log.read(1, 300) == want
        assert log.term_at(299) == 4 and log.term_at(199) == 1
        assert log.recovery.problems == []
        log.append(entries(300, 310, term=5))
    with SegmentedLog.open(tmp_path, segment_bytes=1000) as log:
        assert log.read(295, 310) == want[294:] + entries(300, 310, term=5)


def test_segment_size_can_change_between_opens(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=500) as log:
        log.append(entries(1, 50))
    with SegmentedLog.open(tmp_path, segment_bytes=5000) as log:
        log.append(entries(50, 100))
        assert log.read(1, 100) == entries(1, 100)


def test_entry_larger_than_the_maximum_is_refused_and_nothing_is_written(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, max_entry_bytes=1024, segment_bytes=4096) as log:
        log.append(entries(1, 3))
        with pytest.raises(EntryTooLargeError, match="1024"):
            log.append([*entries(3, 5), Entry(5, 1, bytes(1024 - HEADER_SIZE + 1))])
        assert log.last_index == 2
        log.append([Entry(3, 1, bytes(1024 - HEADER_SIZE))])  # exactly the limit fits
        assert len(log.read(3, 4)[0].data) == 1024 - HEADER_SIZE


def test_entry_larger_than_a_segment_is_refused(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=256) as log:
        with pytest.raises(EntryTooLargeError, match="segment"):
            log.append([Entry(1, 1, bytes(256))])
        assert log.last_index == 0
        assert data_files(tmp_path) == []


def test_default_maximum_entry_is_4_mib(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path) as log, pytest.raises(EntryTooLargeError):
        log.append([Entry(1, 1, bytes(4 * 1024 * 1024))])


@pytest.mark.parametrize(
    "kwargs",
    [{"flush": "never"}, {"segment_bytes": 10}, {"flush_interval_ms": 0}, {"max_entry_bytes": 1}],
)
def test_bad_open_arguments_are_refused(tmp_path: pathlib.Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SegmentedLog.open(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_sync_mode_is_durable_when_append_returns(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, flush="sync", segment_bytes=400) as log:
        log.append(entries(1, 20))
        assert log.durable_index == 19
        lengths = log.durable_lengths()
        assert sum(d for d, _i in lengths.values()) == sum(s.bytes for s in log.segments())


def test_async_mode_flushes_on_sync_and_in_the_background(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, flush="async", flush_interval_ms=10_000) as log:
        log.append(entries(1, 10))
        assert log.durable_index == 0
        log.sync()
        assert log.durable_index == 9
        assert log.durable_lengths()[log.segments()[0].name] == (log.segments()[0].bytes, 9 * INDEX_SIZE)
    with SegmentedLog.open(tmp_path, flush="async", flush_interval_ms=5) as log:
        log.append(entries(10, 20))
        assert wait_for(lambda: log.durable_index == 19)


def test_segments_report_last_write_time(tmp_path: pathlib.Path) -> None:
    before = time.time()
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        log.append(entries(1, 10, size=52))
        assert all(before - 1 <= s.last_write <= time.time() + 1 for s in log.segments())
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        first = log.segments()[0]
        assert first.last_write == pytest.approx(os.stat(tmp_path / "data" / first.name).st_mtime)


def test_many_segments_beyond_the_open_window_stay_readable(tmp_path: pathlib.Path) -> None:
    n = OPEN_WINDOW * 3
    want = entries(1, 3 * n + 1, size=52)
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        for e in want:
            log.append([e])
        assert len(log.segments()) == n
        assert log.read(1, len(want) + 1) == want
        assert log.term_at(2) == 1
        log.truncate_after(5)  # truncating into a segment whose handles were closed
        assert log.read(1, 6) == want[:5]
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        assert log.read(1, 6) == want[:5]
    with SegmentedLog.open(tmp_path / "many", segment_bytes=300, file_ops=NoSyncOps()) as log:
        log.append(want)
    before = len(os.listdir("/proc/self/fd"))
    with SegmentedLog.open(tmp_path / "many", segment_bytes=300) as log:
        assert len(log.segments()) == n
        # file handles stay bounded: the open window's segments, the lock and the checkpoint
        assert len(os.listdir("/proc/self/fd")) - before <= 2 * OPEN_WINDOW + 2
        assert log.read(1, len(want) + 1) == want


def test_a_batch_spanning_many_segments(tmp_path: pathlib.Path) -> None:
    want = entries(1, 100, size=52)
    with SegmentedLog.open(tmp_path, segment_bytes=250, flush="sync") as log:
        log.append(want[:1])
        log.append(want[1:])
        assert len(log.segments()) == 50
        assert log.read(1, 100) == want
    with SegmentedLog.open(tmp_path, segment_bytes=250) as log:
        assert log.read(1, 100) == want


def test_closed_log_refuses_calls_and_close_is_idempotent(tmp_path: pathlib.Path) -> None:
    log = SegmentedLog.open(tmp_path)
    log.append(entries(1, 3))
    log.close()
    log.close()
    for call in (lambda: log.read(1, 2), lambda: log.term_at(1), lambda: log.append(entries(3, 4)), log.sync):
        with pytest.raises(LogClosedError):
            call()


def test_compaction_deletes_whole_old_segments_only(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        log.append(entries(1, 31, size=52))  # segments of 3 entries
        log.compact_before(8)
        assert log.first_index == 7  # 7 and 8 share a segment with 9: kept
        assert data_files(tmp_path)[0].name == f"{600:020d}"
        assert log.term_at(6) == 1
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        assert (log.first_index, log.last_index, log.term_at(6)) == (7, 30, 1)
        assert log.read(7, 31) == entries(7, 31, size=52)


def test_readers_see_a_consistent_prefix_while_one_thread_appends(tmp_path: pathlib.Path) -> None:
    """Reads overlap appends for sure: every few appends, the appender stops between writing a batch's data and
    publishing it (inside `pwrite`) until a reader has completed a read started meanwhile."""
    want = [Entry(i, 1 + i // 50, f"entry-{i}".encode() * (i % 7 + 1)) for i in range(1, 3001)]
    errors: list[BaseException] = []
    reads = 0
    read_done = threading.Condition()
    overlapped = 0

    class PausingOps(NoSyncOps):
        pause = False

        def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
            nonlocal overlapped
            super().pwrite(fd, data, offset)
            if self.pause:  # written, not yet published: let a whole read run now
                self.pause = False
                with read_done:
                    target = reads + 2  # the read in progress may have started before the write: wait for 2
                    if read_done.wait_for(lambda: reads >= target or bool(errors), timeout=10):
                        overlapped += 1

    ops = PausingOps()
    with SegmentedLog.open(tmp_path, segment_bytes=4096, file_ops=ops) as log:
        done = threading.Event()

        def reader() -> None:
            nonlocal reads
            try:
                while not done.is_set():
                    last = log.last_index
                    if last:
                        lo = max(1, last - 40)
                        got = log.read(lo, last + 1)
                        assert got == want[lo - 1 : last]
                        assert log.term_at(last) == want[last - 1].term
                    with read_done:
                        reads += 1
                        read_done.notify_all()
            except BaseException as exc:
                errors.append(exc)
                with read_done:
                    read_done.notify_all()

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for n, k in enumerate(range(0, len(want), 7)):
            ops.pause = n % 10 == 5
            log.append(want[k : k + 7])
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    assert overlapped == len(range(5, len(range(0, len(want), 7)), 10))  # every paused append saw whole reads


def test_readers_during_truncation_and_compaction_see_whole_states(tmp_path: pathlib.Path) -> None:
    """The owner truncates, re-appends and compacts; readers only ever see entries some state held."""

    def body(i: int, term: int) -> bytes:
        return f"{i}@{term}".encode() * 3

    errors: list[BaseException] = []
    reads = 0
    done = threading.Event()
    with SegmentedLog.open(tmp_path, segment_bytes=512, file_ops=NoSyncOps()) as log:
        log.append([Entry(i, 1, body(i, 1)) for i in range(1, 40)])

        def reader() -> None:
            nonlocal reads
            try:
                while not done.is_set():
                    first, last = log.first_index, log.last_index
                    try:
                        got = log.read(max(first, last - 30), last + 1)
                        log.term_at(last)
                    except (UnavailableError, CompactedError):
                        continue  # the state moved between the two snapshots above: fine
                    assert [e.index for e in got] == list(range(got[0].index, got[0].index + len(got)))
                    assert all(e.data == body(e.index, e.term) for e in got)
                    assert all(a.term <= b.term for a, b in itertools.pairwise(got))
                    reads += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        term = 1
        for round_ in range(60):
            term += 1
            cut = max(log.first_index - 1, log.last_index - 7)
            log.truncate_after(cut)
            log.append([Entry(i, term, body(i, term)) for i in range(cut + 1, cut + 12)])
            if round_ % 10 == 9:
                log.compact_before(log.last_index - 30)
        assert wait_for(lambda: reads >= 50 or bool(errors))
        done.set()
        for t in threads:
            t.join()
    assert errors == []


def test_an_empty_but_offset_log_survives_reopen(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        log.append([Entry(i, i, bytes(52)) for i in range(1, 31)])
        log.compact_before(20)
        first = log.first_index
        log.truncate_after(first - 1)
        assert (log.first_index, log.last_index) == (first, first - 1)
    assert first > 1 and data_files(tmp_path) == []
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        assert (log.first_index, log.last_index, log.term_at(first - 1)) == (first, first - 1, first - 1)
        log.append([Entry(first, 99, b"again")])
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        assert log.read(first, first + 1) == [Entry(first, 99, b"again")]


@pytest.mark.parametrize("bad", [Entry(1, 2**64, b"x"), Entry(1, 1, "text")])  # type: ignore[arg-type]
def test_unencodable_entries_are_refused_before_writing(tmp_path: pathlib.Path, bad: Entry) -> None:
    with SegmentedLog.open(tmp_path) as log:
        with pytest.raises((ValueError, TypeError)):
            log.append([bad])
        assert log.last_index == 0
        log.append([Entry(1, 1, b"ok")])
        assert log.read(1, 2) == [Entry(1, 1, b"ok")]


def test_a_failed_close_of_a_handle_leaves_no_closed_fd_number_behind(tmp_path: pathlib.Path) -> None:
    """Review finding 9: `Segment.close_fds` clears both handles even if closing one raises (a closed fd number
    left in place would later be reused by another file), and closes the other one."""
    closed: list[int] = []

    class FailingClose(FileOps):
        fail = True

        def close(self, fd: int) -> None:
            super().close(fd)
            closed.append(fd)
            if self.fail:
                self.fail = False
                raise OSError(errno.EIO, "injected close EIO")

    ops = FailingClose()
    seg = Segment(str(tmp_path), 0, 1)
    os.makedirs(tmp_path / "data")
    os.makedirs(tmp_path / "index")
    seg.open_fds(ops, create=True)
    fds = [seg.data_fd, seg.index_fd]
    with pytest.raises(OSError, match="injected"):
        seg.close_fds(ops)
    assert seg.data_fd is None and seg.index_fd is None and not seg.fds_open
    assert closed == fds


def test_an_error_after_publishing_does_not_fail_the_append_but_poisons_the_log(tmp_path: pathlib.Path) -> None:
    """Review finding 9: closing the handles of segments that left the open window happens after the batch is
    published; an error there must not make `append` report a published batch as failed (an error from append
    means nothing was appended). The next call reports it instead."""

    class FailingClose(NoSyncOps):
        armed = False

        def close(self, fd: int) -> None:
            super().close(fd)
            if self.armed:
                self.armed = False
                raise OSError(errno.EIO, "injected close EIO")

    ops = FailingClose()
    want = entries(1, OPEN_WINDOW + 3, size=52)
    log = SegmentedLog.open(tmp_path, segment_bytes=100, file_ops=ops)  # one entry per segment
    log.append(want[:OPEN_WINDOW])
    ops.armed = True
    log.append(want[OPEN_WINDOW : OPEN_WINDOW + 1])  # a new segment: the oldest handles are closed
    assert log.last_index == OPEN_WINDOW + 1
    with pytest.raises(LogClosedError, match="injected close"):
        log.append(want[OPEN_WINDOW + 1 :])
    log.close()
    with SegmentedLog.open(tmp_path, segment_bytes=100) as again:
        assert again.read(1, again.last_index + 1) == want[: OPEN_WINDOW + 1]
