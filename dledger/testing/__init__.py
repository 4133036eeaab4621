"""Test helpers that users may use too: in-memory storage fakes and a deterministic cluster harness.

Invariant: nothing in this package touches disk, sockets or clocks.
"""

from dledger.testing.cluster import Cluster, SimNode
from dledger.testing.memory_log import MemoryHardStateStore, MemoryLog

__all__ = ["Cluster", "MemoryHardStateStore", "MemoryLog", "SimNode"]
