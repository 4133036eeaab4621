"""`Config`: the static settings of one core, validated on construction.

Invariants (checked in `__post_init__`, a bad config raises `ValueError`): `id` is one of `peers` (or, with
`join=True`, is not: a joining node), peers are unique and non-empty strings,
`0 < heartbeat_tick < election_tick`, every limit is positive, lease reads require check-quorum, and a
preferred leader is one of the peers.

`peers` is the *initial* configuration: the voters the group started with. Once the log or the hard state
holds a configuration (`dledger.raft.membership`), that one rules and `peers` is only the fallback.

Joining a running group: start the new node with `join=True` and `peers` = the group's initial voters (the
node itself not among them), an empty log and an empty hard state. It is a non-member: it never campaigns
and answers only leader traffic, until the leader's log (or a snapshot) brings it a configuration naming it;
it becomes a voter only when a CONFIG entry promotes it. The leader adds it with
`propose_conf_change(ConfChange(ADD_LEARNER, id, address))`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Config", "ReadOnlyOption"]


class ReadOnlyOption(enum.Enum):
    """How the leader serves linearizable reads (thesis 6.4)."""

    READ_INDEX = "read_index"  # confirm leadership with a quorum round for every read (safe, default)
    LEASE = "lease"  # answer at once while a quorum acknowledged us < one election timeout ago


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one Raft core. Times are in ticks; sizes are payload bytes (`len(entry.data)`)."""

    id: str
    peers: tuple[str, ...]  # the voters, including `id`
    election_tick: int = 10  # T: the election timeout is drawn from [T, 2T)
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: ReadOnlyOption = ReadOnlyOption.READ_INDEX
    max_inflight_msgs: int = 256  # AppendEntries in flight per follower (replicate state)
    max_inflight_bytes: int = 32 << 20  # payload bytes in flight per follower
    max_append_bytes: int = 1 << 20  # payload bytes per AppendEntries (at least one entry is sent)
    # entries per AppendEntries: bounds what a message of tiny or empty entries adds per entry on the wire
    # (a follower far behind on empty entries would otherwise get one message too large to be accepted)
    max_append_entries: int = 8192
    max_uncommitted_bytes: int = 64 << 20  # the leader refuses proposals beyond this many uncommitted bytes
    max_committed_bytes: int = 4 << 20  # committed entries handed out per Ready (at least one)
    preferred_leader: str | None = None  # DLedger's preferredLeaderIds: leadership goes back to it
    group: str = "default"
    applied: int = 0  # the last index the state machine applied before this start
    join: bool = False  # a new node joining a running group: `id` is not one of the initial `peers`
    promote_max_lag: int = 1000  # a learner is promoted only when at most this many entries behind
    # followers learn a new commit index from the next AppendEntries or heartbeat (at most heartbeat_tick
    # later) instead of from a message of its own: a lone append costs half the peer messages (hashicorp/raft
    # does the same). Only when followers' state machines may lag by a heartbeat.
    lazy_commit: bool = False
    # protocol-aware recovery: this replica may have lost entries up to this index that it had persisted
    # (so acknowledged): its storage was damaged, not crashed. Until its log reaches it again the core is
    # `recovering`: it grants no vote (nor pre-vote), never campaigns, and only takes the leader's entries.
    # 0: nothing lost. The core also recovers when the saved commit index lies past its log's end.
    recovering_until: int = 0
    # the term of the entry at `recovering_until` when the driver knows it (0: unknown). Then a recovering
    # core answers votes as its undamaged log would have: it grants one only to a candidate at least as
    # up-to-date as (recovering_term, recovering_until), so a group that needs its vote can still elect a
    # leader that has everything it had. 0: it grants none.
    recovering_term: int = 0

    def __post_init__(self) -> None:
        peers = tuple(self.peers)
        object.__setattr__(self, "peers", peers)
        if not peers or any(not isinstance(p, str) or not p for p in peers):
            raise ValueError(f"peers must be non-empty strings, got {peers!r}")
        if len(set(peers)) != len(peers):
            raise ValueError(f"peers must be unique, got {peers!r}")
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"id must be a non-empty string, got {self.id!r}")
        if self.join and self.id in peers:
            raise ValueError(f"a joining node {self.id!r} must not be one of the initial peers {peers!r}")
        if not self.join and self.id not in peers:
            raise ValueError(f"id {self.id!r} is not one of the peers {peers!r} (use join=True for a new node)")
        if self.promote_max_lag < 0:
            raise ValueError("promote_max_lag must be >= 0")
        if not 0 < self.heartbeat_tick < self.election_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        for name in (
            "max_inflight_msgs",
            "max_inflight_bytes",
            "max_append_bytes",
            "max_append_entries",
            "max_uncommitted_bytes",
            "max_committed_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.applied < 0:
            raise ValueError("applied must be >= 0")
        if type(self.recovering_until) is not int or self.recovering_until < 0:
            raise ValueError("recovering_until must be an int >= 0")
        if type(self.recovering_term) is not int or self.recovering_term < 0:
            raise ValueError("recovering_term must be an int >= 0")
        if self.read_only is ReadOnlyOption.LEASE and not self.check_quorum:
            raise ValueError("lease reads require check_quorum")
        if self.preferred_leader is not None and self.preferred_leader not in peers:
            raise ValueError(f"preferred leader {self.preferred_leader!r} is not a peer")
