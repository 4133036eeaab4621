"""Errors the core raises to its caller.

Invariant: these signal a refused *request* (a proposal, a read, a transfer); nothing was appended or
changed. Errors inside the core (a broken invariant) raise `RaftInvariantError` and mean a bug.
"""

from __future__ import annotations

__all__ = ["ConfChangeError", "NotLeaderError", "ProposalDroppedError", "RaftError", "RaftInvariantError"]


class RaftError(Exception):
    """Base class of the core's request errors."""


class NotLeaderError(RaftError):
    """This node is not the leader; `leader_id` is the leader it knows of, or None."""

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


class ProposalDroppedError(RaftError):
    """The leader refused a proposal: `reason` is "busy" (back-pressure) or "transferring"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class ConfChangeError(ProposalDroppedError):
    """The leader refused a membership change; `reason` says why (one already in flight, no commit in the
    leader's term yet, a transfer in progress, a learner not caught up, or a change that does not apply)."""


class RaftInvariantError(AssertionError):
    """An internal invariant broke: a bug in the core (never caused by a message from outside)."""
