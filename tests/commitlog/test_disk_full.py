"""A full disk (ENOSPC injected from the write path) raises a clear error and leaves the log as it was."""

from __future__ import annotations

import errno
import pathlib

import pytest

from dledger.commitlog import DiskFullError, SegmentedLog
from tests.commitlog.conftest import FaultyOps, entries


@pytest.mark.parametrize("flush", ["sync", "async"])
@pytest.mark.parametrize("where", ["data", "index"])
@pytest.mark.parametrize("nth", [0, 1, 2])
def test_enospc_leaves_the_log_unchanged(tmp_path: pathlib.Path, flush: str, where: str, nth: int) -> None:
    """Fail the `nth` write of a batch that spans three segments; before and after reopen nothing changed."""
    ops = FaultyOps()
    before = entries(1, 8, size=52)
    with SegmentedLog.open(tmp_path, segment_bytes=300, flush=flush, file_ops=ops) as log:  # type: ignore[arg-type]
        log.append(before)  # 7 entries of 100 bytes: segments [1-3] [4-6] [7]
        seen = {"data": 0, "index": 0}

        def fail(kind: str, n: int) -> bool:
            if kind != where:
                return False
            seen[kind] += 1
            return seen[kind] == nth + 1

        ops.fail = fail
        with pytest.raises(DiskFullError, match="disk full") as info:
            log.append(entries(8, 15, size=52))  # entries 8, 9 fill segment 3, then 2 more segments
        assert info.value.errno == errno.ENOSPC
        assert isinstance(info.value, OSError)
        ops.fail = lambda kind, n: False
        assert log.last_index == 7
        assert log.read(1, 8) == before
        assert [s.last_index for s in log.segments()] == [3, 6, 7]
        log.append(entries(8, 10, size=52))  # space is back: appends continue where they were
        assert log.read(1, 10) == entries(1, 10, size=52)
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        assert log.read(1, 10) == entries(1, 10, size=52)
        assert log.recovery.problems == []


def test_enospc_then_reopen_without_further_appends(tmp_path: pathlib.Path) -> None:
    ops = FaultyOps()
    with SegmentedLog.open(tmp_path, segment_bytes=300, file_ops=ops) as log:
        log.append(entries(1, 5, size=52))
        ops.fail = lambda kind, n: kind == "index"
        with pytest.raises(DiskFullError):
            log.append(entries(5, 6, size=52))
        ops.fail = lambda kind, n: False
    with SegmentedLog.open(tmp_path, segment_bytes=300) as log:
        assert log.read(1, log.last_index + 1) == entries(1, 5, size=52)


def test_other_write_errors_propagate_unchanged(tmp_path: pathlib.Path) -> None:
    ops = FaultyOps()
    ops.err = errno.EIO
    with SegmentedLog.open(tmp_path, file_ops=ops) as log:
        log.append(entries(1, 3))
        ops.fail = lambda kind, n: True
        with pytest.raises(OSError) as info:
            log.append(entries(3, 4))
        assert info.value.errno == errno.EIO and not isinstance(info.value, DiskFullError)
        ops.fail = lambda kind, n: False
        assert log.read(1, 3) == entries(1, 3)
