"""The state machine interface a node applies committed entries to (the broker adapter implements it).

Contract: `apply(entry)` is called for every committed entry (NORMAL, NOOP and CONFIG alike; ignore the
kinds you do not use) in index order, exactly once per index per process start, from the node's event loop
thread; it must not block for long. `last_applied()` is read once at start: entries up to it are not applied
again, so a durable state machine resumes where it stopped and a volatile one returns 0 and sees everything.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dledger.storage_api import Entry

__all__ = ["StateMachine"]


@runtime_checkable
class StateMachine(Protocol):
    def last_applied(self) -> int: ...

    def apply(self, entry: Entry) -> None: ...
