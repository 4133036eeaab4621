"""The four roles of a Raft node (§5.1, plus the pre-candidate of thesis 9.6). Only `RaftCore._become_*`
changes a node's role."""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
