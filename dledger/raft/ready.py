"""`Ready`: the batch of work the core hands to its driver, and the persist step every driver runs.

Contract (who writes what, in this order):
1. `ready = core.ready()` (only when `core.has_ready()`; never twice without `advance` in between).
2. Send `ready.messages` now (they need nothing persisted: AppendEntries of a leader, thesis 10.2.1,
   pre-votes, TimeoutNow, heartbeats).
3. Persist: `persist_ready(ready, log, hard_state_store)` — the DRIVER writes storage, the core never
   does: truncate the log after `entries[0].index - 1`, append `entries`, make them durable, then save
   `hard_state` durably. (`persist_ready` does exactly this for any LogStorage/HardStateStore.)
4. Only then send `ready.persisted_messages` (vote and append responses, a candidate's vote requests).
5. Apply `ready.committed_entries` in order (they are always already persisted locally) and answer
   `ready.read_states` once the state machine applied up to their `index`.
6. `core.advance(ready)`: the core marks the entries stable and the committed entries applied.
The driver may call `step`/`tick`/`propose` between `ready()` and `advance()`; their effects show in the
next Ready. A crash anywhere loses only what step 3 had not made durable, and nothing sent depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dledger.raft.messages import Message
from dledger.storage_api import Entry, HardState, HardStateStore, LogStorage

__all__ = ["ReadState", "Ready", "SoftState", "persist_ready"]


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

    @property
    def must_sync(self) -> bool:
        """True when there is something to make durable before `persisted_messages` may go."""
        return self.hard_state is not None or bool(self.entries)


def persist_ready(ready: Ready, log: LogStorage, hard_state_store: HardStateStore) -> None:
    """Step 3 of the contract: write `ready.entries` then `ready.hard_state` (durability is the stores')."""
    if ready.entries:
        first = ready.entries[0].index
        if first <= log.last_index:
            log.truncate_after(first - 1)
        log.append(ready.entries)
    if ready.hard_state is not None:
        hard_state_store.save(ready.hard_state)
