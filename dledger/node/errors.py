"""The errors a running node raises to its callers (the client service, an embedding application, the
broker's store), one per meaning:

- `NodeNotLeaderError`: this node cannot serve the request; nothing was proposed. It carries a `LeaderHint`.
- `BusyError`: back-pressure or a leadership transfer in progress; nothing was proposed.
- `OutcomeUnknown`: the request was proposed, but its fate is unknown (leadership lost, timeout, write error).
- `NodeStoppedError`: the node is shutting down; nothing was proposed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BusyError", "LeaderHint", "NodeNotLeaderError", "NodeStoppedError", "OutcomeUnknown"]


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


class OutcomeUnknown(Exception):
    """The request was proposed but its fate is unknown (leadership lost, timeout, write error)."""


class NodeStoppedError(Exception):
    """The node is shutting down; nothing was proposed."""
