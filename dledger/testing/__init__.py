"""Test helpers that users may use too: in-memory storage fakes, a deterministic cluster harness for the
raft core, and a checker of Raft's safety properties over a cluster's history.

Invariant: nothing in this package touches disk, sockets or clocks.
"""

from dledger.testing.cluster import Cluster, SimNode
from dledger.testing.invariants import SafetyChecker
from dledger.testing.memory_log import MemoryHardStateStore, MemoryLog

__all__ = ["Cluster", "MemoryHardStateStore", "MemoryLog", "SafetyChecker", "SimNode"]
