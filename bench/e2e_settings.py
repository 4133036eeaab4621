"""PySyncObj's settings for the e2e benchmark, per figure (its best ones; see `bench/pysyncobj_peer.py`).

Kept apart from the peer script so that `bench.e2e` can report them without importing pysyncobj.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    # many appends in flight: batching on, default election timeouts
    "throughput": {
        "appendEntriesUseBatch": True,
        "raftMinTimeout": 0.4,
        "raftMaxTimeout": 1.4,
        "appendEntriesPeriod": 0.05,
    },
    # one synchronous client: batching off (PySyncObj: "improve single request speed")
    "latency": {
        "appendEntriesUseBatch": False,
        "raftMinTimeout": 0.4,
        "raftMaxTimeout": 1.4,
        "appendEntriesPeriod": 0.05,
    },
    # failover: short election timeouts (shorter ones elect spuriously under load)
    "failover": {
        "appendEntriesUseBatch": False,
        "raftMinTimeout": 0.2,
        "raftMaxTimeout": 0.4,
        "appendEntriesPeriod": 0.03,
        "connectionTimeout": 0.6,
    },
}
COMMON: dict[str, Any] = {
    "dynamicMembershipChange": False,
    "logCompactionMinEntries": 1 << 40,
    "logCompactionMinTime": 1 << 30,
    "commandsQueueSize": 1_000_000,
    "connectionRetryTime": 0.2,
    # the default; 256 KiB and 16 MiB (with 4 MiB socket buffers) were slower on this machine
    "appendEntriesBatchSizeBytes": 1 << 16,
}
