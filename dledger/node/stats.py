"""`NodeStats`: the counters a running node keeps (decode errors, role changes, persists, snapshots, ...).

Invariant: only the node's driver (on the loop thread) writes them; the metrics and status pages read them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeStats"]


@dataclass(slots=True)
class NodeStats:
    """Counters of one node, read by its metrics and status; only the driver's loop thread writes them."""

    decode_errors: int = 0
    fenced: str = ""
    role_changes: int = 0
    readies: int = 0
    wakeups: int = 0  # times the driver's loop woke from waiting (a tick, a message, a request)
    entries_persisted: int = 0
    bytes_persisted: int = 0
    elections: int = 0  # times this node became a candidate
    leader_changes: int = 0  # times the leader it knows of changed
    snapshots_taken: int = 0
    snapshots_installed: int = 0  # snapshots from a leader that replaced this node's log
    snapshots_sent: int = 0  # transfers to followers that completed
    keepalive_heartbeats: int = 0  # heartbeats sent again while a leader's long write held its driver
    repairs: int = 0  # storage damage found while running and repaired in place (see node_repair)
