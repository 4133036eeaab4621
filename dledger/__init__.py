"""dledger: a Raft-replicated commit log for RocketMQ-style brokers.

Layers (see ARCHITECTURE.md): `dledger.raft` (pure consensus core), `dledger.commitlog` (durable
segmented log + LMDB hard state), `dledger.server` (node runtime), `dledger.broker_adapter` (message store).
"""

from dledger.storage_api import (
    CompactedError,
    Entry,
    EntryKind,
    HardState,
    HardStateStore,
    LogStorage,
    UnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "CompactedError",
    "Entry",
    "EntryKind",
    "HardState",
    "HardStateStore",
    "LogStorage",
    "UnavailableError",
    "__version__",
]
