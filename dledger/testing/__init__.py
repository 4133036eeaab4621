"""Test helpers that users may use too: in-memory storage fakes, a deterministic cluster harness for the
raft core, a checker of Raft's safety properties over a cluster's history, and (`launcher`) one local
process group of nodes or brokers, as `dledger cluster`, `dledger demo` and the tests start them.

Invariant: the names exported here touch no disk, sockets or clocks; `launcher` (imported on its own) does.
"""

from dledger.testing.cluster import Cluster, SimNode
from dledger.testing.invariants import SafetyChecker
from dledger.testing.memory_log import MemoryHardStateStore, MemoryLog

__all__ = ["Cluster", "MemoryHardStateStore", "MemoryLog", "SafetyChecker", "SimNode"]
