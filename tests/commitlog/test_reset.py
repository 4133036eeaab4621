"""`SegmentedLog.reset`: the on-disk layout after it, reopen, verify, compaction after it, and crash atomicity
(a power cut before every file operation of a reset leaves the old log or the reset one, never a mix)."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil

import pytest

from dledger.commitlog import Entry, LogClosedError, SegmentedLog
from dledger.commitlog.meta import read_base
from dledger.commitlog.verify import dump_entries, verify_store
from tests.commitlog.conftest import NoSyncOps, PowerLossOps, data_files, entries

SEG = 400


def test_reset_replaces_the_log_and_survives_reopen(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        log.append(entries(1, 40, size=30))
        end = log.segments()[-1]
        old_end = int(end.name) + end.bytes
        log.reset(100, 7)
        assert (log.first_index, log.last_index, log.term_at(100)) == (101, 100, 7)
        assert log.segments() == [] and data_files(tmp_path) == []
        assert read_base(str(tmp_path)).pos == old_end  # positions keep growing: segment names never repeat
        log.append(entries(101, 130, term=7, size=30))
        assert int(log.segments()[0].name) == old_end
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        assert (log.first_index, log.last_index, log.term_at(100)) == (101, 129, 7)
        assert log.read(101, 130) == entries(101, 130, term=7, size=30)
    report = verify_store(str(tmp_path))
    assert report.clean and (report.first_index, report.last_index, report.entries) == (101, 129, 29)
    assert [e.index for e in dump_entries(str(tmp_path), 120, None) if isinstance(e, Entry)] == list(range(120, 130))


def test_an_empty_reset_log_reopens_empty(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        log.append(entries(1, 10))
        log.reset(5, 3)
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        assert (log.first_index, log.last_index, log.term_at(5)) == (6, 5, 3)
        log.reset(5, 3)  # twice in a row: same position, still fine
        log.reset(0, 0)  # back to a brand-new log
        assert (log.first_index, log.last_index, log.term_at(0)) == (1, 0, 0)
        log.append(entries(1, 4, term=1))
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        assert log.read(1, 4) == entries(1, 4)
    assert verify_store(str(tmp_path)).clean


@pytest.mark.parametrize("flush", ["sync", "async"])
def test_compaction_and_retention_work_after_a_reset(tmp_path: pathlib.Path, flush: str) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=SEG, flush=flush) as log:  # type: ignore[arg-type]
        log.append(entries(1, 30, size=30))
        log.compact_before(20)
        log.reset(500, 4)
        for lo in range(501, 600, 9):
            batch = entries(lo, lo + 9, size=30)
            log.append([Entry(e.index, 4 + (e.index - 501) // 30, e.data, e.kind) for e in batch])
        infos = log.segments()
        assert len(infos) > 3
        log.compact_before(infos[2].last_index + 1)
        first = log.first_index
        assert first == infos[2].last_index + 1
        assert log.term_at(first - 1) == 4 + (first - 1 - 501) // 30
        log.truncate_after(550)
        assert log.last_index == 550
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        assert (log.first_index, log.last_index) == (first, 550)
        assert [e.index for e in log.read(first, 551)] == list(range(first, 551))
    assert verify_store(str(tmp_path)).clean


def test_reset_refuses_bad_arguments(tmp_path: pathlib.Path) -> None:
    with SegmentedLog.open(tmp_path) as log:
        log.append(entries(1, 3))
        for bad in ((-1, 0), (0, -1), (1.0, 1), (1, True)):
            with pytest.raises(ValueError):
                log.reset(*bad)
        assert log.read(1, 3) == entries(1, 3)


class CrashEveryStep(PowerLossOps):
    """Takes a power-cut image before every file operation while `armed`."""

    def __init__(self, root: pathlib.Path, images: pathlib.Path) -> None:
        super().__init__(root)
        self.armed = False
        self.images_dir = images
        self.images: list[pathlib.Path] = []

    def _image(self) -> None:
        if self.armed:
            dst = self.images_dir / f"{len(self.images):03d}"
            self.crash_image(dst)
            self.images.append(dst)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        self._image()
        super().pwrite(fd, data, offset)

    def datasync(self, fd: int) -> None:
        self._image()
        super().datasync(fd)

    def fsync_dir(self, path: str) -> None:
        self._image()
        super().fsync_dir(path)

    def remove(self, path: str) -> None:
        self._image()
        super().remove(path)

    def replace(self, src: str, dst: str) -> None:
        self._image()
        super().replace(src, dst)

    def truncate(self, fd: int, length: int) -> None:
        self._image()
        super().truncate(fd, length)


@pytest.mark.parametrize("compacted", [False, True], ids=["fresh-meta", "meta-replaced"])
@pytest.mark.parametrize("flush", ["sync", "async"])
def test_a_power_cut_at_any_step_of_a_reset_leaves_the_old_or_the_reset_log(
    tmp_path: pathlib.Path, flush: str, compacted: bool
) -> None:
    store = tmp_path / "s"
    ops = CrashEveryStep(store, tmp_path / "img")
    old = entries(1, 40, size=30)
    with SegmentedLog.open(store, segment_bytes=SEG, flush=flush, flush_interval_ms=600_000, file_ops=ops) as log:  # type: ignore[arg-type]
        log.append(old)
        if compacted:
            log.compact_before(10)
        log.sync()
        first = log.first_index
        log.append(entries(40, 45, size=30))  # un-fsynced in async mode: may be lost, never half-kept
        ops.armed = True
        log.reset(200, 9)
        ops._image()  # and right after it returns
        ops.armed = False
    assert len(ops.images) >= 5
    outcomes = set()
    for image in ops.images:
        with SegmentedLog.open(image, segment_bytes=SEG, file_ops=NoSyncOps()) as log:
            if log.first_index == 201:
                assert (log.last_index, log.term_at(200)) == (200, 9)
                outcomes.add("reset")
            else:
                assert log.first_index == first and 39 <= log.last_index <= 44
                assert log.read(first, log.last_index + 1) == entries(first, log.last_index + 1, size=30)
                outcomes.add("old")
            log.append([Entry(log.last_index + 1, 9, b"after")])
        assert verify_store(str(image)).clean, image
        shutil.rmtree(image)
    assert outcomes == {"old", "reset"}


def test_a_failure_partway_through_a_reset_poisons_the_log_and_reopen_finishes_it(tmp_path: pathlib.Path) -> None:
    ops = PowerLossOps(tmp_path)
    log = SegmentedLog.open(tmp_path, segment_bytes=SEG, file_ops=ops)
    log.append(entries(1, 40, size=30))
    ops.fail = lambda kind, path: errno.EIO if kind == "fsync_dir" and path.endswith(os.sep + "data") else None
    with pytest.raises(OSError):
        log.reset(70, 2)
    with pytest.raises(LogClosedError, match="reopen"):
        log.append([Entry(71, 2, b"x")])
    log.close()
    ops.fail = lambda kind, path: None
    with SegmentedLog.open(tmp_path, segment_bytes=SEG) as log:
        assert (log.first_index, log.last_index, log.term_at(70)) == (71, 70, 2)
    assert verify_store(str(tmp_path)).clean


def test_segments_left_below_the_base_by_a_crash_are_skipped_by_verify(tmp_path: pathlib.Path) -> None:
    saved = tmp_path / "saved"
    store = tmp_path / "s"
    with SegmentedLog.open(store, segment_bytes=SEG) as log:
        log.append(entries(1, 40, size=30))
    shutil.copytree(store, saved)
    with SegmentedLog.open(store, segment_bytes=SEG) as log:
        log.reset(60, 3)
        log.append(entries(61, 70, term=3, size=30))
    for sub in ("data", "index"):  # a crash after the meta write, before the deletes
        for p in (saved / sub).iterdir():
            shutil.copy(p, store / sub / p.name)
    assert verify_store(str(store)).clean
    with SegmentedLog.open(store, segment_bytes=SEG) as log:
        assert (log.first_index, log.last_index) == (61, 69)
        assert log.recovery.segments_deleted
