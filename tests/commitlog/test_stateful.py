"""A hypothesis state machine: `SegmentedLog` against a list model, with reopen, truncate, compact and reset.

Tiny segments make rollover, multi-segment batches and whole-segment compaction happen all the time. The I/O
goes through `PowerLossOps`, whose power cuts keep exactly what was fsynced: a missing fsync fails the machine.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dledger.commitlog import CompactedError, Entry, EntryKind, SegmentedLog, UnavailableError
from dledger.commitlog.verify import verify_store
from tests.commitlog.conftest import PowerLossOps

SEGMENT = 200


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dledger-stateful-")
        self.ops = PowerLossOps(self.dir)  # the disk's durable state: kept across reopens, like a real disk
        self.log = self._open("async")
        self.model: list[Entry] = []  # entries first_index .. last_index
        self.first = 1
        self.prev_term = 0  # term of first - 1

    def _open(self, flush: str) -> SegmentedLog:
        # the flusher never runs by itself here: durability comes from sync, rollover, truncation
        return SegmentedLog.open(
            self.dir,
            segment_bytes=SEGMENT,
            flush=flush,  # type: ignore[arg-type]
            flush_interval_ms=600_000,
            file_ops=self.ops,
        )

    @initialize()
    def start(self) -> None:
        pass

    @property
    def last(self) -> int:
        return self.first + len(self.model) - 1

    def term(self, i: int) -> int:
        return self.prev_term if i == self.first - 1 else self.model[i - self.first].term

    @rule(
        sizes=st.lists(st.integers(0, 120), min_size=1, max_size=8),
        bump=st.integers(0, 2),
        kind=st.sampled_from(list(EntryKind)),
    )
    def append(self, sizes: list[int], bump: int, kind: EntryKind) -> None:
        term = (self.model[-1].term if self.model else self.prev_term) + bump
        batch = [Entry(self.last + 1 + k, term, bytes([(self.last + k) % 251]) * n, kind) for k, n in enumerate(sizes)]
        self.log.append(batch)
        self.model += batch

    @rule(back=st.integers(0, 12))
    def truncate(self, back: int) -> None:
        i = max(self.first - 1, self.last - back)
        self.log.truncate_after(i)
        del self.model[i - self.first + 1 :]

    @rule(ahead=st.integers(0, 30))
    def compact(self, ahead: int) -> None:
        i = self.first + ahead
        old_first = self.first
        self.log.compact_before(i)
        new_first = self.log.first_index
        assert old_first <= new_first <= max(old_first, min(i, self.last))
        if new_first > old_first:
            self.prev_term = self.model[new_first - old_first - 1].term
            del self.model[: new_first - old_first]
            self.first = new_first

    @rule(ahead=st.integers(-8, 20), bump=st.integers(0, 2))
    def reset(self, ahead: int, bump: int) -> None:
        """A snapshot install: durable and atomic when it returns (a power cut right after keeps it)."""
        i = max(0, self.last + ahead)
        t = (self.model[-1].term if self.model else self.prev_term) + bump
        self.log.reset(i, t)
        self.model, self.first, self.prev_term = [], i + 1, t
        assert self.log.durable_index == i

    @rule(flush=st.sampled_from(["sync", "async"]))
    def reopen(self, flush: str) -> None:
        self.log.close()
        self.log = self._open(flush)
        assert self.log.recovery.problems == []

    @rule()
    def sync(self) -> None:
        self.log.sync()
        assert self.log.durable_index == self.last

    @rule(flush=st.sampled_from(["sync", "async"]))
    def power_cut(self, flush: str) -> None:
        """Keep only what was fsynced, as the power-loss model (not the log's own bookkeeping) says, then
        recover: a missing fsync anywhere loses an entry at or below `durable_index` and fails here."""
        durable = self.log.durable_index
        crashed = tempfile.mkdtemp(prefix="dledger-stateful-cut-")
        self.ops.crash_image(crashed)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = crashed
        self.ops = PowerLossOps(crashed)
        self.ops.mark_all_durable()  # the image is what the disk holds
        self.log = self._open(flush)
        assert durable <= self.log.last_index <= self.last
        assert self.log.first_index == self.first
        del self.model[self.log.last_index - self.first + 1 :]
        assert self.log.read(self.first, self.last + 1) == self.model

    @rule()
    def verify(self) -> None:
        self.log.sync()
        report = verify_store(self.dir)
        assert report.clean, report.problems
        assert report.entries == len(self.model)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        lo = data.draw(st.integers(self.first, self.last))
        hi = data.draw(st.integers(lo, self.last + 1))
        budget = data.draw(st.one_of(st.none(), st.integers(0, 400)))
        got = self.log.read(lo, hi, budget)
        want = self.model[lo - self.first : hi - self.first]
        if budget is not None:
            n, total = 0, 0
            for e in want:
                total += len(e.data)
                if total > budget:
                    break
                n += 1
            want = want[: max(n, 1)]
        assert got == want

    @invariant()
    def bounds_and_terms(self) -> None:
        assert (self.log.first_index, self.log.last_index) == (self.first, self.last)
        assert self.log.term_at(self.first - 1) == self.prev_term
        if self.model:
            assert self.log.term_at(self.last) == self.model[-1].term
            mid = (self.first + self.last) // 2
            assert self.log.term_at(mid) == self.term(mid)
        with pytest.raises(UnavailableError):
            self.log.term_at(self.last + 1)
        if self.first > 1:
            with pytest.raises(CompactedError):
                self.log.term_at(self.first - 2)

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LogMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestLogMachine = LogMachine.TestCase


@pytest.mark.slow
def test_log_machine_long() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(LogMachine, settings=settings(max_examples=600, stateful_step_count=80, deadline=None))
