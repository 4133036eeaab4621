"""Test helpers that users may use too: in-memory storage fakes (and, with the raft core, a cluster harness).

Invariant: nothing in this package touches disk, sockets or clocks.
"""

from dledger.testing.memory_log import MemoryHardStateStore, MemoryLog

__all__ = ["MemoryHardStateStore", "MemoryLog"]
