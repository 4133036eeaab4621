"""Opening a store reads only its tail: bytes read and entries checked do not grow with the log's length."""

from __future__ import annotations

import pathlib

import pytest

from dledger.commitlog import FileOps, SegmentedLog
from dledger.commitlog.recovery import TAIL_RECORDS, TAIL_VERIFY_BYTES
from tests.commitlog.conftest import entries


def build(path: pathlib.Path, n: int, size: int) -> None:
    with SegmentedLog.open(path, segment_bytes=1 << 30) as log:
        batch = 1000
        for lo in range(1, n + 1, batch):
            log.append(entries(lo, min(lo + batch, n + 1), size=size))


def open_cost(path: pathlib.Path) -> tuple[int, int, int]:
    ops = FileOps()
    with SegmentedLog.open(path, segment_bytes=1 << 30, file_ops=ops) as log:
        return ops.bytes_read, log.recovery.entries_checked, log.last_index


@pytest.mark.parametrize("size", [10, 2000])
def test_open_cost_is_independent_of_the_number_of_entries(tmp_path: pathlib.Path, size: int) -> None:
    costs = []
    for n in (3000, 30000):
        build(tmp_path / str(n), n, size)
        read, checked, last = open_cost(tmp_path / str(n))
        assert last == n
        costs.append((read, checked))
    (small_read, small_checked), (big_read, big_checked) = costs
    assert big_checked <= TAIL_RECORDS
    assert big_read <= TAIL_VERIFY_BYTES + TAIL_RECORDS * 32 + 2 * (size + 48) + 4096
    assert big_read <= small_read * 1.1 and big_checked <= small_checked


def test_a_lagging_index_costs_only_the_unindexed_tail(tmp_path: pathlib.Path) -> None:
    build(tmp_path, 20000, 10)
    index = next((tmp_path / "index").iterdir())
    with open(index, "r+b") as f:  # as if the last 500 index records never reached the disk
        f.truncate(index.stat().st_size - 500 * 32)
    ops = FileOps()
    with SegmentedLog.open(tmp_path, segment_bytes=1 << 30, file_ops=ops) as log:
        assert log.last_index == 20000
        assert log.recovery.index_records_rebuilt == 500
        assert log.recovery.entries_checked <= TAIL_RECORDS + 500
        assert log.read(19990, 20001) == entries(19990, 20001, size=10)
    assert ops.bytes_read <= TAIL_VERIFY_BYTES + TAIL_RECORDS * 32 + 500 * 58 + 4096
