"""`RaftLog`: the core's view of the log, stable entries in `LogStorage` plus unstable ones in memory.

Like etcd's raftLog + unstable: entries the core accepted but the driver has not yet persisted live in
`unstable` (a list starting at index `offset`); everything below `offset` is read from storage. The core
never writes to storage: the driver persists `Ready.entries` and `advance` calls `stable_to`.

A cache keeps the most recent stable entries (`cache`, ending exactly at `offset`), so that committed entries
are applied and recent entries are sent to followers without reading them back from storage. Entries stay
after they are applied: the leader commits with the fastest quorum and applies at once, while a slower
follower still needs them (reading them back cost the leader an eighth of its time at 64 KiB entries).
It is bounded by entries and by payload bytes: past 2x `_CACHE_ENTRIES` or 2x `_CACHE_BYTES` its oldest
entries leave until it is within 1x of both.

Invariants:
- `applied <= commit_index <= last_index()`;
- `cache` holds the stable entries `cache_offset .. offset - 1`, equal to what storage holds (or held: the
  driver may compact applied entries the cache still has), and `cache_bytes` is their payload size; cached
  entries below `storage.first_index` are never handed out, so compaction looks the same with or without
  the cache (a follower that needs them gets a snapshot);
- `offset - 1` is the last stable index (what the core knows the driver persisted);
  `last_index() == offset + len(unstable) - 1`;
- storage is read only below `offset`; entries at or above `offset` come from `unstable` only, so the
  driver may write storage between `Ready` and `advance` without the core seeing a half-written state;
- terms never decrease along the log (Log Matching); conflicts are found by binary search using it;
- while a snapshot received from the leader is pending (`pending_snapshot`, set by `restore`, cleared by
  `snapshot_stable` once the driver installed it), the log is empty below it: `first_index()` is the
  snapshot's index + 1, `term(snapshot index)` is its term, older indexes are compacted, storage is never
  read (the driver has not reset it yet) and no committed entry is handed out; `commit_index` is the
  snapshot's index and `applied` jumps to it when the driver restored the state machine.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import attrgetter

from dledger.raft.errors import RaftInvariantError
from dledger.storage_api import CompactedError, Entry, EntryKind, LogStorage, SnapshotMeta, UnavailableError

__all__ = ["RaftLog", "make_entries", "payload_size"]

_data = attrgetter("data")
_CACHE_ENTRIES = 8192  # the cache keeps at most 2x this many stable entries...
_CACHE_BYTES = 16 << 20  # ...and at most 2x this many bytes of their payload


def payload_size(entries: Sequence[Entry]) -> int:
    """Total `len(data)` of `entries`, computed in C (no per-entry Python loop)."""
    return sum(map(len, map(_data, entries)))


def _limit(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within `max_bytes` (at least one entry)."""
    return _limit_sized(entries, max_bytes)[0]


def _limit_sized(entries: list[Entry], max_bytes: int) -> tuple[list[Entry], int]:
    """`_limit`, and the payload size of what it returns."""
    size = payload_size(entries)
    if size <= max_bytes:
        return entries, size
    total = 0
    for n, e in enumerate(entries):
        if total + len(e.data) > max_bytes and n > 0:
            return entries[:n], total
        total += len(e.data)
    return entries, total


class RaftLog:
    """Stable (storage) + unstable (memory) entries, with `commit_index` and `applied`."""

    __slots__ = (
        "applied",
        "cache",
        "cache_bytes",
        "cache_offset",
        "commit_index",
        "offset",
        "pending_snapshot",
        "storage",
        "unstable",
    )

    def __init__(self, storage: LogStorage, commit_index: int, applied: int) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.offset = storage.last_index + 1
        self.cache: list[Entry] = []
        self.cache_bytes = 0
        self.cache_offset = self.offset
        last = self.offset - 1
        if applied > last:
            raise ValueError(f"applied {applied} is past the last index {last}")
        # the state machine only applies committed entries, so applied also proves a commit
        commit_index = max(commit_index, applied)
        if commit_index > last:
            raise ValueError(f"commit index {commit_index} is past the last index {last}")
        self.commit_index = commit_index
        self.applied = applied
        self.pending_snapshot: SnapshotMeta | None = None

    def __repr__(self) -> str:
        return (
            f"RaftLog(first={self.first_index()}, stable_last={self.offset - 1}, last={self.last_index()}, "
            f"commit={self.commit_index}, applied={self.applied})"
        )

    # ---- reading ----

    def first_index(self) -> int:
        snap = self.pending_snapshot
        return snap.index + 1 if snap is not None else self.storage.first_index

    def last_index(self) -> int:
        return self.offset + len(self.unstable) - 1

    def stable_last_index(self) -> int:
        return self.offset - 1

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term of `index`; raises CompactedError / UnavailableError outside the known range."""
        k = index - self.offset
        if k >= 0:
            if k < len(self.unstable):
                return self.unstable[k].term
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        k = index - self.cache_offset
        if k >= 0 and index >= self.storage.first_index:
            return self.cache[k].term
        snap = self.pending_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            raise CompactedError(f"index {index} is below the pending snapshot at {snap.index}")
        return self.storage.term_at(index)

    def term_or_none(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_none(index) == term

    def entries_sized(self, lo: int, hi: int, max_bytes: int) -> tuple[list[Entry], int]:
        """`entries`, and their payload size (the hot path: entries from memory, sized once)."""
        off = self.offset
        if lo >= off:
            return _limit_sized(self.unstable[lo - off : hi - off], max_bytes)
        coff = self.cache_offset
        if lo >= coff and lo >= self.storage.first_index:
            if hi <= off:
                return _limit_sized(self.cache[lo - coff : hi - coff], max_bytes)
            return _limit_sized(self.cache[lo - coff :] + self.unstable[: hi - off], max_bytes)
        out = self.entries(lo, hi, max_bytes)
        return out, payload_size(out)

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi), at most `max_bytes` of payload but at least one when lo < hi."""
        if lo >= hi:
            return []
        off = self.offset
        if lo >= off:
            return _limit(self.unstable[lo - off : hi - off], max_bytes)
        coff = self.cache_offset
        if lo >= coff and lo >= self.storage.first_index:
            if hi <= off:
                return _limit(self.cache[lo - coff : hi - coff], max_bytes)
            return _limit(self.cache[lo - coff :] + self.unstable[: hi - off], max_bytes)
        if self.pending_snapshot is not None:
            raise CompactedError(f"index {lo} is below the pending snapshot at {self.pending_snapshot.index}")
        if lo >= coff:  # cached, but storage compacted it
            raise CompactedError(f"index {lo} is compacted (first index {self.storage.first_index})")
        stable = self.storage.read(lo, min(hi, coff), max_bytes)
        if hi <= coff or stable[-1].index < coff - 1:
            return stable
        rest = max_bytes - payload_size(stable)
        more = self.cache[: hi - coff] + self.unstable[: max(0, hi - off)]
        if rest <= 0 or not more or len(more[0].data) > rest:
            return stable
        return stable + _limit(more, rest)

    def is_up_to_date(self, last_log_index: int, last_log_term: int) -> bool:
        """§5.4.1: is a candidate's log (last index, last term) at least as up-to-date as ours?"""
        our_term = self.last_term()
        return last_log_term > our_term or (last_log_term == our_term and last_log_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest i <= index whose term is <= `term` (binary search; terms never decrease)."""
        hi = min(index, self.last_index())
        lo = self.first_index() - 1
        if hi < lo:
            return hi
        t = self.term_or_none(hi)
        if t is None or t <= term:
            return hi
        # invariant: term(lo) <= term (or lo is the floor), term(hi) > term
        while hi - lo > 1:
            mid = (lo + hi) // 2
            t = self.term_or_none(mid)
            if t is not None and t <= term:
                lo = mid
            else:
                hi = mid
        return lo

    # ---- changing ----

    def append(self, entries: Sequence[Entry]) -> int:
        """Leader append at the end; returns the new last index."""
        if entries and entries[0].index != self.last_index() + 1:
            raise RaftInvariantError(f"append at {entries[0].index} after last index {self.last_index()}")
        self.unstable.extend(entries)
        return self.last_index()

    def maybe_append(self, prev_log_index: int, prev_log_term: int, entries: Sequence[Entry]) -> int | None:
        """Follower append (§5.3): None when (prev_log_index, prev_log_term) does not match; otherwise
        writes the entries past the first conflict and returns the last index known to match the leader."""
        if not self.match_term(prev_log_index, prev_log_term):
            return None
        last_new = prev_log_index + len(entries)
        if not entries:
            return last_new
        k = self._first_conflict(entries)
        if k < len(entries):
            start = entries[k].index
            if start <= self.commit_index:
                raise RaftInvariantError(f"entry {start} conflicts with a committed entry (commit {self.commit_index})")
            self._truncate_and_append(entries[k:] if k else entries)
        return last_new

    def _first_conflict(self, entries: Sequence[Entry]) -> int:
        """Position in `entries` of the first entry not already in our log (len(entries) if none)."""
        first = entries[0].index
        overlap = min(len(entries), self.last_index() - first + 1)
        if overlap <= 0:
            return 0
        last = entries[overlap - 1]
        if self.term_or_none(last.index) == last.term:
            return overlap  # Log Matching: everything before matches too
        lo, hi = 0, overlap - 1  # entries[hi] conflicts; find the first conflicting position
        while lo < hi:
            mid = (lo + hi) // 2
            e = entries[mid]
            if self.term_or_none(e.index) == e.term:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        off = self.offset
        end = off + len(self.unstable)
        if first == end:
            self.unstable.extend(entries)
        elif first <= off:
            self.offset = first
            self.unstable = list(entries)
            if first > self.cache_offset:
                del self.cache[first - self.cache_offset :]
                self.cache_bytes = payload_size(self.cache)
            else:
                self.cache = []
                self.cache_bytes = 0
                self.cache_offset = first
        elif first < end:
            del self.unstable[first - off :]
            self.unstable.extend(entries)
        else:
            raise RaftInvariantError(f"gap: appending {first} after {end - 1}")

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted the entries up to (index, term); ignore if they were replaced since."""
        k = index - self.offset
        unstable = self.unstable
        if 0 <= k < len(unstable) and unstable[k].term == term:
            cache = self.cache
            if k + 1 == len(unstable):
                moved = unstable
                self.unstable = []
            else:
                moved = unstable[: k + 1]
                del unstable[: k + 1]
            cache += moved
            self.cache_bytes += payload_size(moved)
            self.offset = index + 1
            if len(cache) > 2 * _CACHE_ENTRIES or self.cache_bytes > 2 * _CACHE_BYTES:
                self._trim_cache()

    def _trim_cache(self) -> None:
        """Drop the oldest cached entries until at most `_CACHE_ENTRIES` and `_CACHE_BYTES` remain."""
        cache = self.cache
        drop = max(0, len(cache) - _CACHE_ENTRIES)
        dropped = payload_size(cache[:drop])
        excess = self.cache_bytes - dropped - _CACHE_BYTES
        if excess > 0:  # the fewest further entries whose payload covers the excess
            sums = list(accumulate(map(len, map(_data, cache[drop:]))))
            more = bisect_left(sums, excess) + 1
            drop += more
            dropped += sums[more - 1]
        self.cache_bytes -= dropped
        del cache[:drop]
        self.cache_offset += drop

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot from the leader (the driver installs it from the Ready)."""
        if meta.index <= self.commit_index:
            raise RaftInvariantError(f"snapshot at {meta.index} is not past the commit index {self.commit_index}")
        self.pending_snapshot = meta
        self.unstable = []
        self.offset = meta.index + 1
        self.cache = []
        self.cache_bytes = 0
        self.cache_offset = self.offset
        self.commit_index = meta.index

    def snapshot_stable(self, meta: SnapshotMeta) -> None:
        """The driver restored the state machine from `meta` and reset storage to it."""
        if self.pending_snapshot == meta:
            self.pending_snapshot = None
        if meta.index > self.applied:
            self.applied = meta.index

    def commit_to(self, index: int) -> bool:
        if index <= self.commit_index:
            return False
        if index > self.last_index():
            raise RaftInvariantError(f"commit {index} past the last index {self.last_index()}")
        self.commit_index = index
        return True

    def applied_to(self, index: int) -> None:
        if index < self.applied or index > self.commit_index:
            raise RaftInvariantError(f"applied {index} outside [{self.applied}, {self.commit_index}]")
        self.applied = index  # applied entries stay cached: a slower follower may still need them

    def next_committed(self, max_bytes: int) -> list[Entry]:
        """Committed, persisted, not-yet-applied entries (bounded by `max_bytes`, at least one)."""
        hi = min(self.commit_index, self.offset - 1) + 1
        lo = self.applied + 1
        if lo >= hi or self.pending_snapshot is not None:
            return []
        coff = self.cache_offset
        if lo >= coff:
            return _limit(self.cache[lo - coff : hi - coff], max_bytes)
        return self.storage.read(lo, min(hi, coff), max_bytes)

    def has_next_committed(self) -> bool:
        return self.pending_snapshot is None and min(self.commit_index, self.offset - 1) > self.applied


_new_object = object.__new__
_set_index = Entry.__dict__["index"].__set__
_set_term = Entry.__dict__["term"].__set__
_set_data = Entry.__dict__["data"].__set__
_set_kind = Entry.__dict__["kind"].__set__


def make_entries(first: int, term: int, datas: Sequence[bytes]) -> list[Entry]:
    """NORMAL entries first.., built by setting their slots from C-level maps (twice as fast as __init__)."""
    n = len(datas)
    entries: list[Entry] = list(map(_new_object, repeat(Entry, n)))
    deque(map(_set_index, entries, range(first, first + n)), maxlen=0)
    deque(map(_set_term, entries, repeat(term, n)), maxlen=0)
    deque(map(_set_data, entries, datas), maxlen=0)
    deque(map(_set_kind, entries, repeat(EntryKind.NORMAL, n)), maxlen=0)
    return entries
