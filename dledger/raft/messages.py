"""Peer messages of the Raft core: frozen, slotted dataclasses named after the Raft paper.

Each message maps one-to-one onto a `PeerMessage` body of `protos/dledger.proto`; `term`, `from_id`,
`to_id` and `group` map onto the envelope (`group`, `from_id`, `to_id`) and the body's `term`.

Invariants:
- messages are immutable values; the core never mutates one it received or sent;
- `AppendEntries.entries` are contiguous, start at `prev_log_index + 1`, and their terms never decrease
  and never exceed the message's `term` (the core drops a message that breaks this);
- `read_context` is opaque to followers: they echo it verbatim in the response. The core puts an 8-byte
  leadership-confirmation round number there (see `read_only.py`), never a client's read context.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter, sub

from dledger.storage_api import Entry

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Message",
    "RequestVote",
    "RequestVoteResponse",
    "TimeoutNow",
    "well_formed",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """§5.2 RequestVote RPC; `pre_vote` asks "would you vote?" without changing any term (thesis 9.6);
    `transfer` marks a campaign started by TimeoutNow (thesis 3.10), which voters must not ignore."""

    term: int
    from_id: str
    to_id: str
    group: str = ""
    last_log_index: int = 0
    last_log_term: int = 0
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    """§5.2 answer; for a granted pre-vote `term` is the term the pre-candidate asked about."""

    term: int
    from_id: str
    to_id: str
    group: str = ""
    vote_granted: bool = False
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """§5.3 AppendEntries RPC; with no entries it is a heartbeat. `read_context` is echoed back."""

    term: int
    from_id: str
    to_id: str
    group: str = ""
    prev_log_index: int = 0
    prev_log_term: int = 0
    leader_commit: int = 0
    entries: tuple[Entry, ...] = ()
    read_context: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse:
    """§5.3 answer.

    On success `match_index` is the last index now known to match the leader (prev_log_index + number of
    entries, never the follower's whole log). On reject, `reject_index` is the `prev_log_index` that was
    rejected (lets the leader drop stale rejects), and (`conflict_index`, `conflict_term`) is the fast
    backtracking hint: the largest index <= the rejected one whose term is <= the rejected `prev_log_term`,
    and its term in the follower's log (0 when unknown).
    """

    term: int
    from_id: str
    to_id: str
    group: str = ""
    success: bool = False
    match_index: int = 0
    reject_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    last_log_index: int = 0
    read_context: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """§7 InstallSnapshot, metadata only: the leader's snapshot covers every entry up to
    `last_included_index` (term `last_included_term`) and `config` is the membership in effect there
    (encoded as in `HardState.config`). The runtime streams the snapshot's bytes beside the core and steps
    this message into the follower's core only once the whole snapshot is stored locally."""

    term: int
    from_id: str
    to_id: str
    group: str = ""
    last_included_index: int = 0
    last_included_term: int = 0
    config: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotResponse:
    """§7 answer. On success `last_index` is the index up to which the follower's log now matches the
    leader's (the snapshot's index, or the follower's commit index when that is higher)."""

    term: int
    from_id: str
    to_id: str
    group: str = ""
    success: bool = False
    last_index: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Thesis 3.10: the leader tells an up-to-date target to start an election at once."""

    term: int
    from_id: str
    to_id: str
    group: str = ""


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)


_get_index = attrgetter("index")
_get_term = attrgetter("term")


def well_formed(m: AppendEntries) -> bool:
    """Indexes and terms make sense: entries contiguous from prev + 1, terms non-decreasing within
    [prev_log_term, term] (list comparisons run in C: no per-entry Python branching)."""
    prev, prev_term, term = m.prev_log_index, m.prev_log_term, m.term
    if prev < 0 or prev_term < 0 or m.leader_commit < 0 or prev_term > term:
        return False
    entries = m.entries
    n = len(entries)
    if n == 0:
        return True
    if entries[0].index != prev + 1 or entries[-1].index != prev + n:
        return False
    if entries[0].term < prev_term or entries[-1].term > term:
        return False
    if n > 2:
        if any(map(sub, map(_get_index, entries), range(prev + 1, prev + n + 1))):
            return False
        terms = list(map(_get_term, entries))
        if terms.count(terms[0]) != n and terms != sorted(terms):  # all equal is the common case
            return False
    return True
