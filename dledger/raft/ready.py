"""`Ready`: the batch of work the core hands to its driver, and the persist step every driver runs.

Contract (who writes what, in this order):
1. `ready = core.ready()` (only when `core.has_ready()`; never twice without `advance` in between).
2. Send `ready.messages` now (they need nothing persisted: AppendEntries of a leader, thesis 10.2.1,
   pre-votes, TimeoutNow, heartbeats).
3. Persist: first, when `ready.snapshot` is set (a snapshot from the leader replaces the whole log), the
   DRIVER restores its state machine from that snapshot (which it already stored while streaming it, before
   it stepped the InstallSnapshot message in) and then calls `log.reset(snapshot.index, snapshot.term)`.
   Then the DRIVER writes storage, the core never does: truncate the log after `entries[0].index - 1`,
   append `entries`, make them durable, then save `hard_state` durably. (`persist_ready` does the log part
   of all this, reset included, for any LogStorage/HardStateStore; the state-machine restore is the
   driver's, before calling it.) A crash between the reset and the hard-state save leaves a log that starts
   after the snapshot with an older hard state: at start the driver reports its snapshot with
   `core.set_snapshot(meta)` before anything else, which fixes the configuration.
4. Only then send `ready.persisted_messages` (vote and append responses, a candidate's vote requests).
5. Apply `ready.committed_entries` in order (they are always already persisted locally, and always above
   any snapshot installed) and answer `ready.read_states` once the state machine applied up to their
   `index`. CONFIG entries are applied too: their data is the full new `Membership.encode()`, which the
   driver keeps to put in the `SnapshotMeta.config` of the next snapshot it takes.
6. `core.advance(ready)`: the core marks the entries stable and the committed entries applied.
The driver may call `step`/`tick`/`propose` between `ready()` and `advance()`; their effects show in the
next Ready. A crash anywhere loses only what step 3 had not made durable, and nothing sent depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dledger.raft.messages import Message
from dledger.storage_api import Entry, HardState, HardStateStore, LogStorage, SnapshotMeta

__all__ = ["Proposed", "ReadState", "Ready", "SoftState", "persist_ready"]


@dataclass(frozen=True, slots=True)
class Proposed:
    """Where a proposal went: entries `first_index..last_index`, all in `term`."""

    first_index: int
    last_index: int
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine applied `index` (thesis 6.4)."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the driver about when it changes (not persisted)."""

    leader_id: str | None
    role: str


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work; the sequences are owned by the Ready and must not be mutated."""

    hard_state: HardState | None  # save durably (after the entries) when not None
    entries: Sequence[Entry]  # persist: truncate after entries[0].index - 1, then append
    messages: Sequence[Message]  # send now
    persisted_messages: Sequence[Message]  # send only after entries and hard_state are durable
    committed_entries: Sequence[Entry]  # apply in order
    read_states: Sequence[ReadState]  # answer once applied >= index
    soft_state: SoftState | None = None  # leader or role changed
    snapshot: SnapshotMeta | None = None  # install first: restore the state machine, then log.reset

    @property
    def must_sync(self) -> bool:
        """True when there is something to make durable before `persisted_messages` may go."""
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None


def persist_ready(ready: Ready, log: LogStorage, hard_state_store: HardStateStore) -> None:
    """Step 3 of the contract: reset the log to `ready.snapshot` (the caller restored its state machine
    first), write `ready.entries`, then `ready.hard_state` (durability is the stores')."""
    if ready.snapshot is not None:
        log.reset(ready.snapshot.index, ready.snapshot.term)
    if ready.entries:
        first = ready.entries[0].index
        if first <= log.last_index:
            log.truncate_after(first - 1)
        log.append(ready.entries)
    if ready.hard_state is not None:
        hard_state_store.save(ready.hard_state)
