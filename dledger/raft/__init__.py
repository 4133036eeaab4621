"""The sans-I/O Raft core: a deterministic state machine driven by `step` / `tick` / `propose` and drained
through `ready()` / `advance()`. It imports nothing that does I/O; time is ticks, randomness is injected.

Public API (see `core.py` for the rules and `ready.py` for the persist contract).
"""

from dledger.raft.config import Config, ReadOnlyOption
from dledger.raft.core import Proposed, RaftCore, RandomSource, Role
from dledger.raft.errors import (
    ConfChangeError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    RaftInvariantError,
)
from dledger.raft.membership import ConfChange, ConfChangeOp, Membership, apply_change
from dledger.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from dledger.raft.progress import Progress, ProgressState
from dledger.raft.ready import ReadState, Ready, SoftState, persist_ready

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeOp",
    "Config",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Membership",
    "Message",
    "NotLeaderError",
    "Progress",
    "ProgressState",
    "ProposalDroppedError",
    "Proposed",
    "RaftCore",
    "RaftError",
    "RaftInvariantError",
    "RandomSource",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "SoftState",
    "TimeoutNow",
    "apply_change",
    "persist_ready",
]
