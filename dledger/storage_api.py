"""The contract between the raft core and storage: log entries, hard state, and two narrow protocols.

This module sits below both `dledger.raft` and `dledger.commitlog` so that neither imports the other:
the core sees storage only through `LogStorage` and `HardStateStore`, and tests run it on the in-memory
fakes of `dledger.testing`. It imports nothing but the standard library.

Invariants every `LogStorage` keeps (the conformance suite in tests/ checks each implementation):
- indexes start at 1 and are contiguous: the log holds exactly `first_index .. last_index`;
- an empty log that never held anything has `first_index == 1` and `last_index == 0`;
- `term_at(i)` is known for `first_index - 1 <= i <= last_index`: the term just before the first entry
  stays known after compaction (`term_at(0) == 0` on a log that starts at 1), because Raft's consistency
  check needs it;
- terms never decrease along the log;
- `compact_before(i)` may keep entries below `i` (segmented storage drops whole segments only) but never
  drops an entry at or above `i`, and never drops `last_index` (the log never becomes empty by compaction,
  so `last_index` and its term stay known).
- `reset(i, t)` (a follower installing a snapshot whose last entry it does not hold) drops every entry and
  leaves an empty log with `first_index == i + 1`, `last_index == i` and `term_at(i) == t`; it is durable
  when it returns and atomic across a crash (after a crash the log is either the old one or the reset one).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "CompactedError",
    "Entry",
    "EntryKind",
    "HardState",
    "HardStateStore",
    "LogStorage",
    "SnapshotMeta",
    "UnavailableError",
    "entries_size",
]


class EntryKind(enum.IntEnum):
    """What an entry carries. The value is stored on disk and on the wire: never renumber."""

    NORMAL = 0  # client data
    NOOP = 1  # the empty entry a new leader appends to open its term
    CONFIG = 2  # a membership change


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `index` starts at 1, as in the Raft paper."""

    index: int
    term: int
    data: bytes
    kind: EntryKind = EntryKind.NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must remember across crashes before it answers a vote or an append.

    `config` is the encoded membership (`dledger.raft.membership.Membership.encode()`) in effect at
    `commit_index`: the one of the last CONFIG entry at or below it, or of the snapshot below it. Empty
    means "the initial configuration given at start". Storage keeps it as opaque bytes.
    """

    current_term: int = 0
    voted_for: str | None = None
    commit_index: int = 0
    config: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: the state machine after applying every entry up to `index` (whose term is
    `term`), and the membership in effect at `index` (encoded, as in `HardState.config`)."""

    index: int
    term: int
    config: bytes = b""


class CompactedError(LookupError):
    """The requested index is below `first_index - 1`: it was compacted away (send a snapshot instead)."""


class UnavailableError(LookupError):
    """The requested index is above `last_index`: it does not exist (yet)."""


def entries_size(entries: Sequence[Entry]) -> int:
    """Bytes of payload in `entries`: what `max_bytes` limits count."""
    return sum(len(e.data) for e in entries)


@runtime_checkable
class LogStorage(Protocol):
    """The replicated log as the raft core sees it.

    `read(lo, hi, max_bytes)` returns the entries with `lo <= index < hi`, in order: the longest prefix whose
    total `len(data)` is at most `max_bytes`, but always at least one entry when `lo < hi`.
    Raises `CompactedError` when `lo < first_index`, `UnavailableError` when `hi > last_index + 1`,
    `ValueError` when `lo > hi`. `lo == hi` returns `[]`.

    `term_at(i)` raises `CompactedError` for `i < first_index - 1` and `UnavailableError` for
    `i > last_index`.

    `append(entries)` requires `entries[0].index == last_index + 1` and contiguous indexes (else
    `ValueError`, and nothing is written); an empty list is a no-op. Durability is the implementation's
    flush policy; the caller learns it through its own `sync()` where it has one.

    `truncate_after(i)` drops every entry with index > i; it requires `first_index - 1 <= i`
    (else `CompactedError`); `i >= last_index` is a no-op.

    `compact_before(i)` drops entries below `i` (see the module invariants for what it may keep).

    `reset(i, t)` empties the log so that it continues after a snapshot ending at index `i`, term `t`
    (see the module invariants); `i >= 0`, `t >= 0`.
    """

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def term_at(self, index: int) -> int: ...

    def read(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...

    def append(self, entries: Sequence[Entry]) -> None: ...

    def truncate_after(self, index: int) -> None: ...

    def compact_before(self, index: int) -> None: ...

    def reset(self, index: int, term: int) -> None: ...


@runtime_checkable
class HardStateStore(Protocol):
    """Durable term, vote and commit index. `save` returns only once the state is durable."""

    def load(self) -> HardState: ...

    def save(self, state: HardState) -> None: ...
