"""RaftLog's entry cache: applied entries stay for slower followers; it is bounded by entries and bytes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dledger.raft.log as raft_log
from dledger.raft.log import RaftLog, make_entries, payload_size
from dledger.storage_api import CompactedError, Entry
from dledger.testing import MemoryLog


class CountingLog(MemoryLog):
    """A MemoryLog that counts reads (the cache is there to avoid them)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        self.reads += 1
        return super().read(lo, hi, max_bytes)


def _persist(log: RaftLog, storage: MemoryLog, datas: Sequence[bytes], term: int = 1) -> None:
    """What the driver does for a leader's proposals: append, persist, then report them stable."""
    entries = make_entries(log.last_index() + 1, term, datas)
    log.append(entries)
    storage.append(entries)
    log.stable_to(entries[-1].index, term)


def _check_invariants(log: RaftLog) -> None:
    assert log.cache_offset + len(log.cache) == log.offset
    assert [e.index for e in log.cache] == list(range(log.cache_offset, log.offset))
    assert log.cache_bytes == payload_size(log.cache)
    assert len(log.cache) <= 2 * raft_log._CACHE_ENTRIES
    assert log.cache_bytes <= 2 * raft_log._CACHE_BYTES


def test_applied_entries_are_sent_from_memory() -> None:
    storage = CountingLog()
    log = RaftLog(storage, 0, 0)
    _persist(log, storage, [b"x" * 100] * 50)
    log.commit_to(50)
    log.applied_to(50)  # the leader committed with the fast follower and applied
    reads = storage.reads
    got, size = log.entries_sized(10, 51, 1 << 20)  # what the slow follower still needs
    assert [e.index for e in got] == list(range(10, 51)) and size == 41 * 100
    assert log.entries(1, 51, 1 << 20) == storage.read(1, 51)
    assert log.term(5) == 1
    assert storage.reads == reads + 1  # only the comparison's own read above
    _check_invariants(log)


def test_the_cache_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_log, "_CACHE_BYTES", 1000)
    storage = CountingLog()
    log = RaftLog(storage, 0, 0)
    for _ in range(30):
        _persist(log, storage, [b"y" * 300])
        _check_invariants(log)
    assert log.cache_bytes <= 2000 and log.cache_offset > 1
    assert log.entries(1, 31, 1 << 20) == storage.read(1, 31)  # older entries come back from storage
    _persist(log, storage, [b"z" * 5000])  # one entry over twice the budget (never so in production: 4 MiB max)
    assert log.cache == [] and log.cache_offset == log.offset == 32
    _check_invariants(log)


def test_compacted_entries_are_not_handed_out_from_the_cache() -> None:
    storage = CountingLog()
    log = RaftLog(storage, 0, 0)
    _persist(log, storage, [b"x"] * 20)
    log.commit_to(20)
    log.applied_to(20)
    storage.compact_before(11)  # the driver compacts behind a snapshot at 10; the cache still has 1..20
    assert log.cache_offset == 1
    with pytest.raises(CompactedError):
        log.term(5)
    with pytest.raises(CompactedError):
        log.entries(5, 21, 1 << 20)
    with pytest.raises(CompactedError):
        log.entries_sized(5, 21, 1 << 20)
    assert log.term(10) == 1  # the entry just before the first is still known (storage keeps its term)
    reads = storage.reads
    assert [e.index for e in log.entries(11, 21, 1 << 20)] == list(range(11, 21))
    assert storage.reads == reads  # from the cache


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.integers(0, 400), min_size=1, max_size=20), st.booleans(), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_cache_matches_storage_whatever_the_sizes(steps: list[tuple[list[int], bool, bool]]) -> None:
    saved = raft_log._CACHE_ENTRIES, raft_log._CACHE_BYTES
    raft_log._CACHE_ENTRIES, raft_log._CACHE_BYTES = 16, 2000
    try:
        storage = MemoryLog()
        log = RaftLog(storage, 0, 0)
        term = 1
        for sizes, conflict, apply in steps:
            if conflict and log.last_index() > log.commit_index + 1:
                # a new leader's entries replace the uncommitted tail (follower repair)
                term += 1
                at = log.commit_index + 1
                entries = make_entries(at + 1, term, [b"c" * n for n in sizes])
                assert log.maybe_append(at, log.term(at), entries) == entries[-1].index
                storage.truncate_after(at)
                storage.append(entries)
                log.stable_to(entries[-1].index, term)
            else:
                _persist(log, storage, [b"d" * n for n in sizes], term)
            _check_invariants(log)
            if apply:
                log.commit_to(log.last_index())
                log.applied_to(log.commit_index)
            last = log.last_index()
            assert log.entries(1, last + 1, 1 << 30) == storage.read(1, last + 1)
            assert [log.term(i) for i in range(1, last + 1)] == [e.term for e in storage.read(1, last + 1)]
    finally:
        raft_log._CACHE_ENTRIES, raft_log._CACHE_BYTES = saved
