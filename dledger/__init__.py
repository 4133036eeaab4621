"""dledger: a Raft-replicated commit log for RocketMQ-style brokers.

Packages (see docs/architecture.md): `dledger.raft` (the pure consensus core), `dledger.commitlog` (the durable
segmented log and LMDB hard state), `dledger.node` (the node runtime), `dledger.client` (the clients),
`dledger.broker_adapter` (the replicated message store), `dledger.rocketmq` (RocketMQ's protocols on the
store), `dledger.cli` (the `dledger` command), `dledger.net` (shared network pieces), `dledger.testing`
(simulation harness and local process groups).
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

# the runtime pulls in grpc: load it only when one of its names is used (PEP 562)
_LAZY = {
    "AppendResult": "dledger.client.client",
    "AsyncDLedgerClient": "dledger.client.aio_client",
    "BusyError": "dledger.node.errors",
    "DLedgerClient": "dledger.client.client",
    "DLedgerError": "dledger.client.client_policy",
    "DLedgerServer": "dledger.node.server",
    "LeaderHint": "dledger.node.errors",
    "NodeConfig": "dledger.node.config",
    "NodeInfo": "dledger.client.client",
    "NodeNotLeaderError": "dledger.node.errors",
    "NodeOutcomeUnknownError": "dledger.node.errors",
    "NodeStoppedError": "dledger.node.errors",
    "NotWrittenError": "dledger.client.client_policy",
    "OutcomeUnknownError": "dledger.client.client_policy",
    "SnapshotError": "dledger.node.state_machine",
    "SnapshottingStateMachine": "dledger.node.state_machine",
    "StateMachine": "dledger.node.state_machine",
    "SyncDLedgerServer": "dledger.node.server",
    "tune_gc": "dledger.node.tuning",
    "tune_malloc": "dledger.node.tuning",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dledger' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    *_LAZY,
    "CompactedError",
    "Entry",
    "EntryKind",
    "HardState",
    "HardStateStore",
    "LogStorage",
    "UnavailableError",
    "__version__",
]
