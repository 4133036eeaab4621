"""One conformance suite for every `LogStorage`: each test is one rule of `dledger.storage_api`'s docstrings.

Runs against `SegmentedLog` (tiny segments so that most tests cross segment boundaries, in both flush modes)
and against `dledger.testing.MemoryLog`. `reset`'s durability and crash atomicity, which only the durable log
can have, are tested in tests/commitlog/test_reset.py and by the state machine of tests/commitlog/test_stateful.py.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import pytest

from dledger.commitlog import SegmentedLog
from dledger.storage_api import CompactedError, Entry, EntryKind, LogStorage, UnavailableError, entries_size
from dledger.testing import MemoryLog

Factory = Callable[[], LogStorage]


@pytest.fixture(params=["segmented-async", "segmented-sync", "memory"])
def make_log(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Factory]:
    opened: list[SegmentedLog] = []

    def factory() -> LogStorage:
        if request.param == "memory":
            return MemoryLog()
        flush: Literal["sync", "async"] = "sync" if request.param == "segmented-sync" else "async"
        log = SegmentedLog.open(tmp_path / f"log{len(opened)}", segment_bytes=256, flush=flush)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


def ents(lo: int, hi: int, term: int = 1, size: int = 20) -> list[Entry]:
    """Entries lo..hi-1 whose data names them, `size` bytes each (so tiny segments roll over every few)."""
    return [Entry(i, term, f"{i:0{size}d}".encode()) for i in range(lo, hi)]


def term_of(i: int) -> int:
    """The term of entry i in `filled` logs: 1 for 1..10, 2 for 11..20, 3 after."""
    return 1 if i <= 10 else 2 if i <= 20 else 3


def filled(make_log: Factory, n: int = 30) -> LogStorage:
    log = make_log()
    for lo in range(1, n + 1, 10):
        log.append([Entry(e.index, term_of(e.index), e.data) for e in ents(lo, min(lo + 10, n + 1))])
    return log


def assert_holds(log: LogStorage, expected: Sequence[Entry]) -> None:
    assert log.first_index == expected[0].index if expected else True
    assert log.last_index == (expected[-1].index if expected else log.first_index - 1)
    assert log.read(log.first_index, log.last_index + 1) == list(expected)
    for e in expected:
        assert log.term_at(e.index) == e.term


def test_implements_the_protocol(make_log: Factory) -> None:
    assert isinstance(make_log(), LogStorage)


def test_empty_log_starts_at_one_and_knows_term_zero(make_log: Factory) -> None:
    log = make_log()
    assert (log.first_index, log.last_index) == (1, 0)
    assert log.term_at(0) == 0
    with pytest.raises(UnavailableError):
        log.term_at(1)
    with pytest.raises(CompactedError):
        log.term_at(-1)
    assert log.read(1, 1) == []
    with pytest.raises(UnavailableError):
        log.read(1, 2)


def test_append_then_read_back_everything(make_log: Factory) -> None:
    log = make_log()
    special = [Entry(21, 2, b"", EntryKind.NOOP), Entry(22, 3, b"c", EntryKind.CONFIG)]
    expected = ents(1, 11, 1) + ents(11, 21, 2) + special
    log.append(expected[:10])
    log.append(expected[10:])
    assert_holds(log, expected)
    assert [e.kind for e in log.read(21, 23)] == [EntryKind.NOOP, EntryKind.CONFIG]


def test_empty_append_is_a_no_op(make_log: Factory) -> None:
    log = filled(make_log, 5)
    log.append([])
    assert log.last_index == 5


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([Entry(7, 3, b"x")], id="gap"),
        pytest.param([Entry(5, 3, b"x")], id="overlap"),
        pytest.param([Entry(6, 3, b"x"), Entry(8, 3, b"y")], id="hole-inside"),
        pytest.param([Entry(6, 3, b"x"), Entry(6, 3, b"y")], id="repeat-inside"),
        pytest.param([Entry(6, 3, b"x"), Entry(7, 2, b"y")], id="term-decreases-inside"),
        pytest.param([Entry(6, 2, b"x")], id="term-below-last"),
    ],
)
def test_bad_append_raises_value_error_and_writes_nothing(make_log: Factory, batch: list[Entry]) -> None:
    log = make_log()
    good = ents(1, 6, term=3)
    log.append(good)
    with pytest.raises(ValueError):
        log.append(batch)
    assert_holds(log, good)
    log.append([Entry(6, 3, b"after")])  # and the log is still usable
    assert log.read(6, 7) == [Entry(6, 3, b"after")]


def test_read_range_rules(make_log: Factory) -> None:
    log = filled(make_log, 30)
    assert [e.index for e in log.read(5, 9)] == [5, 6, 7, 8]
    assert log.read(9, 9) == []
    assert log.read(31, 31) == []
    with pytest.raises(ValueError):
        log.read(9, 8)
    with pytest.raises(UnavailableError):
        log.read(25, 32)
    with pytest.raises(CompactedError):
        log.read(0, 3)


def test_read_max_bytes_returns_the_longest_prefix_that_fits(make_log: Factory) -> None:
    log = make_log()
    sizes = [5, 17, 1, 40, 3, 0, 22, 9, 30, 11, 2, 60, 7]
    log.append([Entry(i + 1, 1, bytes([i]) * s) for i, s in enumerate(sizes)])
    last = len(sizes)
    for lo in range(1, last + 1):
        for budget in range(0, 130, 3):
            got = log.read(lo, last + 1, max_bytes=budget)
            # the reference: longest prefix whose total fits, at least one entry
            want, total = 0, 0
            for s in sizes[lo - 1 :]:
                if total + s > budget:
                    break
                total += s
                want += 1
            want = max(want, 1)
            assert [e.index for e in got] == list(range(lo, lo + want)), (lo, budget)
            assert entries_size(got) <= budget or len(got) == 1


def test_read_max_bytes_always_returns_one_entry(make_log: Factory) -> None:
    log = filled(make_log, 12)
    assert [e.index for e in log.read(3, 10, max_bytes=0)] == [3]
    assert [e.index for e in log.read(3, 10, max_bytes=1)] == [3]
    assert log.read(3, 3, max_bytes=0) == []


def test_term_at_bounds(make_log: Factory) -> None:
    log = filled(make_log, 30)
    assert [log.term_at(i) for i in (0, 1, 10, 11, 20, 21, 30)] == [0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(UnavailableError):
        log.term_at(31)
    with pytest.raises(CompactedError):
        log.term_at(-1)


def test_truncate_after_drops_the_tail_and_appends_continue(make_log: Factory) -> None:
    log = filled(make_log, 30)
    log.truncate_after(14)
    assert log.last_index == 14
    with pytest.raises(UnavailableError):
        log.term_at(15)
    log.append(ents(15, 18, term=7))
    assert_holds(log, [Entry(e.index, term_of(e.index), e.data) for e in ents(1, 15)] + ents(15, 18, 7))


def test_truncate_at_or_past_the_end_is_a_no_op(make_log: Factory) -> None:
    log = filled(make_log, 10)
    log.truncate_after(10)
    log.truncate_after(99)
    assert_holds(log, ents(1, 11, 1))


def test_truncate_everything_gives_an_empty_log(make_log: Factory) -> None:
    log = filled(make_log, 10)
    log.truncate_after(0)
    assert (log.first_index, log.last_index, log.term_at(0)) == (1, 0, 0)
    log.append(ents(1, 4, term=5))
    assert_holds(log, ents(1, 4, 5))


def test_compact_never_drops_at_or_above_the_index(make_log: Factory) -> None:
    log = filled(make_log, 30)
    log.compact_before(17)
    first = log.first_index
    assert 1 <= first <= 17
    assert log.read(first, 31) == [Entry(e.index, term_of(e.index), e.data) for e in ents(first, 31)]
    assert log.term_at(first - 1) == (term_of(first - 1) if first > 1 else 0)
    with pytest.raises(CompactedError):
        log.read(first - 1, first)
    if first > 1:
        with pytest.raises(CompactedError):
            log.term_at(first - 2)


def test_compact_past_the_end_keeps_the_last_entry(make_log: Factory) -> None:
    log = filled(make_log, 30)
    log.compact_before(1000)
    assert log.last_index == 30
    assert log.term_at(30) == 3
    assert log.read(30, 31) == ents(30, 31, 3)
    assert log.first_index <= 30
    log.term_at(log.first_index - 1)  # known


def test_term_before_first_survives_compaction(make_log: Factory) -> None:
    log = make_log()
    for i in range(1, 41):
        log.append([Entry(i, i, bytes(25))])  # the term equals the index: every term_at is distinct
    log.compact_before(35)
    first = log.first_index
    assert log.term_at(first - 1) == first - 1
    if isinstance(log, SegmentedLog):
        assert first > 1, "tiny segments must let compaction drop something"


def test_truncate_back_to_the_compaction_point_keeps_the_offset(make_log: Factory) -> None:
    log = make_log()
    for i in range(1, 41):
        log.append([Entry(i, i, bytes(25))])
    log.compact_before(30)
    first = log.first_index
    with pytest.raises(CompactedError):
        log.truncate_after(first - 2)
    log.truncate_after(first - 1)
    assert (log.first_index, log.last_index) == (first, first - 1)
    assert log.term_at(first - 1) == first - 1
    assert log.read(first, first) == []
    log.compact_before(first + 5)  # nothing to compact: still consistent
    assert (log.first_index, log.last_index) == (first, first - 1)
    log.append([Entry(first, 99, b"new")])
    assert log.read(first, first + 1) == [Entry(first, 99, b"new")]
    assert log.term_at(first - 1) == first - 1


@pytest.mark.parametrize("at", [40, 30, 12, 0], ids=["past-the-end", "at-the-end", "inside", "zero"])
def test_reset_leaves_an_empty_log_after_the_snapshot_point(make_log: Factory, at: int) -> None:
    log = filled(make_log, 30)
    log.reset(at, 5)
    assert (log.first_index, log.last_index, log.term_at(at)) == (at + 1, at, 5)
    assert log.read(at + 1, at + 1) == []
    with pytest.raises(UnavailableError):
        log.term_at(at + 1)
    with pytest.raises(UnavailableError):
        log.read(at + 1, at + 2)
    if at > 0:
        with pytest.raises(CompactedError):
            log.term_at(at - 1)
        with pytest.raises(CompactedError):
            log.read(at, at + 1)


def test_appends_continue_after_a_reset(make_log: Factory) -> None:
    log = filled(make_log, 30)
    log.reset(40, 5)
    with pytest.raises(ValueError):
        log.append(ents(42, 44, term=5))  # a gap
    with pytest.raises(ValueError):
        log.append(ents(41, 42, term=4))  # a term below the snapshot's
    log.append(ents(41, 60, term=5))
    log.append(ents(60, 62, term=6))
    assert_holds(log, ents(41, 60, 5) + ents(60, 62, 6))
    assert log.term_at(40) == 5


def test_truncate_and_compact_after_a_reset(make_log: Factory) -> None:
    log = filled(make_log, 30)
    log.reset(40, 5)
    log.truncate_after(40)  # nothing after the snapshot point: a no-op
    with pytest.raises(CompactedError):
        log.truncate_after(39)
    log.compact_before(45)  # nothing to compact
    assert (log.first_index, log.last_index, log.term_at(40)) == (41, 40, 5)
    log.append(ents(41, 71, term=5))
    log.truncate_after(50)
    assert_holds(log, ents(41, 51, 5))
    log.compact_before(48)
    first = log.first_index
    assert 41 <= first <= 48
    assert log.term_at(first - 1) == 5
    assert log.read(first, 51) == ents(first, 51, 5)


def test_reset_twice_and_back_to_a_new_log(make_log: Factory) -> None:
    log = filled(make_log, 10)
    log.reset(20, 3)
    log.append(ents(21, 25, term=3))
    log.reset(22, 4)  # below the last index: drops everything all the same
    assert (log.first_index, log.last_index, log.term_at(22)) == (23, 22, 4)
    log.reset(0, 0)
    assert (log.first_index, log.last_index, log.term_at(0)) == (1, 0, 0)
    log.append(ents(1, 3, term=1))
    assert_holds(log, ents(1, 3, 1))


@pytest.mark.parametrize("bad", [(-1, 0), (0, -1)])
def test_reset_refuses_negative_arguments(make_log: Factory, bad: tuple[int, int]) -> None:
    log = filled(make_log, 5)
    with pytest.raises(ValueError):
        log.reset(*bad)
    assert_holds(log, ents(1, 6, 1))
