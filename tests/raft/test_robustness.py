"""Nothing from outside crashes the core: garbage is dropped and counted, and the state stays unchanged."""

from __future__ import annotations

import pytest

from dledger.raft import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)
from dledger.storage_api import Entry, HardState
from dledger.testing import Cluster
from tests.raft.helpers import Node, make_leader


def _state(n: Node) -> tuple[object, ...]:
    c = n.core
    return (c.role, c.current_term, c.voted_for, c.leader_id, c.commit_index, c.last_index, n.log.last_index)


FOLLOWER_GARBAGE: list[tuple[str, Message]] = [
    ("unknown_peer", RequestVote(term=9, from_id="intruder", to_id="n1", group="default")),
    ("unknown_peer", AppendEntriesResponse(term=9, from_id="intruder", to_id="n1", group="default")),
    ("wrong_group", RequestVote(term=9, from_id="n2", to_id="n1", group="other")),
    ("misaddressed", AppendEntries(term=9, from_id="n2", to_id="n3", group="default")),
    ("unknown_peer", TimeoutNow(term=2, from_id="n1", to_id="n1", group="default")),  # from ourselves
    ("stale_term", AppendEntries(term=1, from_id="n2", to_id="n1", group="default")),
    ("stale_term", RequestVote(term=1, from_id="n2", to_id="n1", group="default")),
    ("bad_term", AppendEntries(term=-1, from_id="n2", to_id="n1", group="default")),
    ("bad_index", AppendEntries(term=2, from_id="n2", to_id="n1", group="default", prev_log_index=-5)),
    ("bad_index", AppendEntries(term=2, from_id="n2", to_id="n1", group="default", leader_commit=-1)),
    (
        "bad_index",  # entries not starting at prev + 1
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(7, 2, b"x"),),
        ),
    ),
    (
        "bad_index",  # an entry with a term above the message's term
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(2, 5, b"x"),),
        ),
    ),
    (
        "bad_index",  # a gap inside the batch
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(2, 2, b"a"), Entry(9, 2, b"b"), Entry(4, 2, b"c")),
        ),
    ),
    (
        "bad_index",  # terms going down inside the batch
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(2, 2, b"a"), Entry(3, 1, b"b"), Entry(4, 2, b"c")),
        ),
    ),
    ("unexpected", AppendEntriesResponse(term=2, from_id="n2", to_id="n1", group="default", success=True)),
    ("unexpected", RequestVoteResponse(term=2, from_id="n2", to_id="n1", group="default", vote_granted=True)),
    ("unexpected", InstallSnapshotResponse(term=2, from_id="n2", to_id="n1", group="default", success=True)),
    (
        "stale_term",
        InstallSnapshot(term=1, from_id="n2", to_id="n1", group="default", last_included_index=5, last_included_term=1),
    ),
    ("bad_index", InstallSnapshot(term=2, from_id="n2", to_id="n1", group="default", last_included_index=-1)),
    ("bad_index", InstallSnapshot(term=2, from_id="n2", to_id="n1", group="default", last_included_term=3)),
    (
        "bad_config",
        InstallSnapshot(
            term=2, from_id="n2", to_id="n1", group="default", last_included_index=9, last_included_term=2, config=b"{"
        ),
    ),
]


@pytest.mark.parametrize(
    ("reason", "msg"), FOLLOWER_GARBAGE, ids=[f"{r}-{k}" for k, (r, _) in enumerate(FOLLOWER_GARBAGE)]
)
def test_follower_drops_and_counts_garbage(reason: str, msg: Message) -> None:
    n = Node(terms=[1], hard_state=HardState(2, None, 1))
    before = _state(n)
    n.core.step(msg)
    n.drain()
    assert n.core.dropped[reason] == 1, n.core.dropped
    assert _state(n) == before


def test_absurd_prev_index_is_rejected_without_harm() -> None:
    n = Node(terms=[1], hard_state=HardState(2, None, 1))
    n.core.step(
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=10**18,
            prev_log_term=2,
            leader_commit=10**18,
        )
    )
    (resp,) = n.drain()
    assert isinstance(resp, AppendEntriesResponse) and not resp.success
    assert resp.conflict_index == 1 and n.core.commit_index == 1


LEADER_GARBAGE: list[tuple[str, AppendEntriesResponse]] = [
    (
        "bad_index",
        AppendEntriesResponse(term=1, from_id="n2", to_id="n1", group="default", success=True, match_index=10**9),
    ),
    (
        "bad_index",
        AppendEntriesResponse(term=1, from_id="n2", to_id="n1", group="default", reject_index=10**9),
    ),
    (
        "bad_index",
        AppendEntriesResponse(term=1, from_id="n2", to_id="n1", group="default", reject_index=1, conflict_index=5),
    ),
    (
        "bad_index",
        AppendEntriesResponse(term=1, from_id="n2", to_id="n1", group="default", reject_index=1, conflict_index=-3),
    ),
]


@pytest.mark.parametrize(("reason", "msg"), LEADER_GARBAGE)
def test_leader_drops_absurd_responses(reason: str, msg: AppendEntriesResponse) -> None:
    n = Node()
    make_leader(n)
    before = (repr(n.core.progress["n2"]), n.core.commit_index)
    n.core.step(msg)
    n.drain()
    assert n.core.dropped[reason] == 1
    assert (repr(n.core.progress["n2"]), n.core.commit_index) == before
    assert n.core.role is Role.LEADER


def test_garbage_read_context_is_ignored() -> None:
    n = Node()
    make_leader(n)
    n.core.step(
        AppendEntriesResponse(
            term=1, from_id="n2", to_id="n1", group="default", success=True, match_index=1, read_context=b"\xff" * 8
        )
    )
    n.core.step(
        AppendEntriesResponse(
            term=1, from_id="n2", to_id="n1", group="default", success=True, match_index=1, read_context=b"what"
        )
    )
    assert n.core.progress["n2"].acked_round <= n.core.read_only.round


def test_cluster_survives_a_flood_of_garbage() -> None:
    """Garbage injected into a live cluster changes nothing: the same leader keeps committing."""
    c = Cluster(3, seed=8)
    lead = c.run_until_leader()
    term = c.core(lead).current_term
    for k in range(50):
        for to in c.ids:
            # leader traffic is accepted from any sender (a joining node knows no leader yet): not garbage;
            # what a non-member may not do is call elections or answer as a peer
            c.inject(RequestVote(term=term + 1000, from_id="mallory", to_id=to, group="default", last_log_index=k))
            c.inject(RequestVote(term=term + 1, from_id="n1", to_id=to, group="elsewhere"))
    c.stabilize()
    c.propose(lead, b"still fine")
    c.stabilize()
    assert c.leader() == lead and c.core(lead).current_term == term
    assert sum(c.core(i).dropped["unknown_peer"] for i in c.ids) == 150
    assert sum(c.core(i).dropped["wrong_group"] for i in c.ids) == 150
