"""In-memory `LogStorage` and `HardStateStore` fakes, for tests of the raft core (and for users' tests).

`MemoryLog` keeps `entries[k]` at index `offset + 1 + k`; `prev_term` is the term of index `offset`
(the entry just before the first), so `term_at(first_index - 1)` survives compaction. It keeps every
invariant of `dledger.storage_api` and passes the same conformance suite as `SegmentedLog`.
Nothing here is durable: `MemoryHardStateStore` and `MemoryLog` model "what was persisted" for the
simulation, which crashes a node by keeping only these objects.
"""

from __future__ import annotations

from collections.abc import Sequence

from dledger.storage_api import CompactedError, Entry, HardState, UnavailableError

__all__ = ["MemoryHardStateStore", "MemoryLog"]


class MemoryLog:
    """A list-backed `LogStorage`."""

    __slots__ = ("_entries", "_offset", "_prev_term")

    def __init__(self, entries: Sequence[Entry] = ()) -> None:
        self._entries: list[Entry] = []
        self._offset = 0
        self._prev_term = 0
        self.append(entries)

    @property
    def first_index(self) -> int:
        return self._offset + 1

    @property
    def last_index(self) -> int:
        return self._offset + len(self._entries)

    def term_at(self, index: int) -> int:
        if index < self._offset:
            raise CompactedError(f"index {index} is compacted (first index {self.first_index})")
        if index > self.last_index:
            raise UnavailableError(f"index {index} is past the last index {self.last_index}")
        if index == self._offset:
            return self._prev_term
        return self._entries[index - self._offset - 1].term

    def read(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo > hi:
            raise ValueError(f"read range [{lo}, {hi}) is inverted")
        if lo < self.first_index:
            raise CompactedError(f"index {lo} is compacted (first index {self.first_index})")
        if hi > self.last_index + 1:
            raise UnavailableError(f"index {hi - 1} is past the last index {self.last_index}")
        out = self._entries[lo - self._offset - 1 : hi - self._offset - 1]
        if max_bytes is None or not out:
            return out
        total = 0
        for n, entry in enumerate(out):
            total += len(entry.data)
            if total > max_bytes:
                return out[: max(n, 1)]
        return out

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        expected = self.last_index + 1
        last_term = self.term_at(self.last_index)
        for entry in entries:
            if entry.index != expected:
                raise ValueError(f"append expected index {expected}, got {entry.index}")
            if entry.term < last_term:
                raise ValueError(f"entry {entry.index} has term {entry.term} below the previous {last_term}")
            expected += 1
            last_term = entry.term
        self._entries.extend(entries)

    def truncate_after(self, index: int) -> None:
        if index < self._offset:
            raise CompactedError(f"cannot truncate after {index}: compacted up to {self._offset}")
        del self._entries[index - self._offset :]

    def compact_before(self, index: int) -> None:
        # never drop the last entry: its index and term must stay known
        index = min(index, self.last_index)
        drop = index - self.first_index
        if drop <= 0:
            return
        self._prev_term = self._entries[drop - 1].term
        del self._entries[:drop]
        self._offset += drop

    def reset(self, index: int, term: int) -> None:
        if index < 0 or term < 0:
            raise ValueError(f"reset needs index >= 0 and term >= 0, got {index}, {term}")
        self._entries.clear()
        self._offset = index
        self._prev_term = term


class MemoryHardStateStore:
    """A `HardStateStore` held in memory; `saves` counts writes so tests can assert persist-before-send."""

    __slots__ = ("_state", "saves")

    def __init__(self, state: HardState | None = None) -> None:
        self._state = state or HardState()
        self.saves = 0

    def load(self) -> HardState:
        return self._state

    def save(self, state: HardState) -> None:
        self._state = state
        self.saves += 1
