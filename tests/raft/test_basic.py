"""Smoke tests of the core through the harness: election, replication, reads, restart, config validation."""

from __future__ import annotations

import random

import pytest

from dledger.raft import Config, NotLeaderError, RaftCore, ReadOnlyOption, Role
from dledger.storage_api import EntryKind, HardState
from dledger.testing import Cluster, MemoryLog


def test_three_nodes_elect_one_leader_and_replicate() -> None:
    c = Cluster(3, seed=0)
    lead = c.run_until_leader()
    term = c.core(lead).current_term
    p = c.propose(lead, b"hello")
    c.stabilize()
    for node in c.nodes.values():
        assert [e.data for e in node.applied if e.kind is EntryKind.NORMAL] == [b"hello"]
        assert node.applied[p.last_index - 1].term == term
    assert sum(1 for i in c.ids if c.core(i).role is Role.LEADER) == 1


def test_single_node_commits_alone() -> None:
    c = Cluster(1, seed=0)
    lead = c.run_until_leader()
    c.propose(lead, b"a")
    c.stabilize()
    assert [e.data for e in c.nodes[lead].applied] == [b"", b"a"]


def test_follower_refuses_proposal_with_leader_hint() -> None:
    c = Cluster(3, seed=0)
    lead = c.run_until_leader()
    follower = next(i for i in c.ids if i != lead)
    with pytest.raises(NotLeaderError) as err:
        c.propose(follower, b"x")
    assert err.value.leader_id == lead


def test_restart_from_storage_keeps_term_vote_and_commit() -> None:
    c = Cluster(3, seed=2)
    lead = c.run_until_leader()
    for k in range(5):
        c.propose(lead, b"%d" % k)
    c.stabilize()
    before = c.core(lead).hard_state
    c.restart(lead)
    after = c.core(lead)
    assert after.role is Role.FOLLOWER
    assert (after.current_term, after.voted_for, after.commit_index) == (
        before.current_term,
        before.voted_for,
        before.commit_index,
    )
    assert after.applied == len(c.nodes[lead].applied) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": "x", "peers": ("a", "b")},
        {"id": "a", "peers": ("a", "a")},
        {"id": "a", "peers": ("a",), "heartbeat_tick": 10, "election_tick": 10},
        {"id": "a", "peers": ("a",), "max_inflight_msgs": 0},
        {"id": "a", "peers": ("a",), "max_append_entries": 0},
        {"id": "a", "peers": ("a",), "read_only": ReadOnlyOption.LEASE, "check_quorum": False},
        {"id": "a", "peers": ("a", "b"), "preferred_leader": "c"},
        {"id": "a", "peers": ("a",), "applied": -1},
    ],
)
def test_config_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Config(**kwargs)  # type: ignore[arg-type]


def test_a_commit_index_past_the_log_end_starts_the_core_recovering() -> None:
    """The log lost entries it had (a damaged disk): the core starts at what the log holds, recovering."""
    core = RaftCore(Config(id="a", peers=("a",)), MemoryLog(), HardState(1, None, 5), random.Random(0))
    assert core.recovering_until == 5 and core.commit_index == 0
