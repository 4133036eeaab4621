"""The errors a running node raises to its callers (the client service, an embedding application, the
broker's store), one per meaning, each named for the node layer (the Raft core has its own `NotLeaderError`
in `dledger.raft.errors`, which the node turns into `NodeNotLeaderError` with a hint of where the leader is;
the clients turn the service's statuses into theirs: `NotLeaderError`, `OutcomeUnknownError` in
`dledger.client.client_policy`):

- `NodeNotLeaderError`: this node cannot serve the request; nothing was proposed. It carries a `LeaderHint`.
- `BusyError`: back-pressure or a leadership transfer in progress; nothing was proposed.
- `NodeOutcomeUnknownError`: the request was proposed, but its fate is unknown (leadership lost, timeout, write error).
- `NodeStoppedError`: the node is shutting down; nothing was proposed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BusyError", "LeaderHint", "NodeNotLeaderError", "NodeOutcomeUnknownError", "NodeStoppedError"]


@dataclass(frozen=True, slots=True)
class LeaderHint:
    leader_id: str = ""
    leader_address: str = ""


class NodeNotLeaderError(Exception):
    """This node cannot serve the request; it was not proposed. Carries where the leader is, if known."""

    def __init__(self, hint: LeaderHint, message: str = "not the leader") -> None:
        super().__init__(message)
        self.hint = hint


class BusyError(Exception):
    """Back-pressure or a leadership transfer in progress: the request was refused, not proposed."""


class NodeOutcomeUnknownError(Exception):
    """The request was proposed but its fate is unknown (leadership lost, timeout, write error)."""


class NodeStoppedError(Exception):
    """The node is shutting down; nothing was proposed."""
