"""Protocol-aware recovery: a replica whose durable log was damaged (not crashed) must not vote until it has
the lost entries again, or a committed entry can be lost. First the hazard, then the recovering state."""

from __future__ import annotations

import random

from dledger.raft import Config, RaftCore, Role
from dledger.raft.messages import RequestVote, RequestVoteResponse
from dledger.storage_api import Entry, HardState
from dledger.testing import Cluster
from dledger.testing.memory_log import MemoryLog


def _acked_then_damaged(remember: bool) -> tuple[Cluster, int]:
    """X is committed by n0 and n1 while n2 is cut off; n1 had not yet learnt the commit (its saved commit
    index is below X) when its disk loses X; the leader n0 is down. Returns the cluster and X's index."""
    c = Cluster(3, seed=3, lazy_commit=True)
    c.elect("n0")
    c.stabilize()
    c.isolate("n2")
    x = c.propose("n0", b"X").last_index
    c.stabilize()
    assert c.core("n0").commit_index >= x  # committed: n0 and n1 persisted it
    assert c.nodes["n1"].store.load().commit_index < x  # n1 acknowledged it, never learnt it was committed
    c.crash("n0")
    c.crash("n1")
    assert c.damage("n1", x - 1, remember=remember) == 1
    c.heal()
    c.cut |= {("n0", "n1"), ("n1", "n0"), ("n0", "n2"), ("n2", "n0")}
    c.restart("n1")
    return c, x


def _tick_until_leader(c: Cluster, ticks: int) -> str | None:
    for _ in range(ticks):
        c.tick()
        c.stabilize()
        lead = c.leader()
        if lead is not None:
            return lead
    return None


def test_the_hazard_a_replica_that_forgot_what_it_acknowledged_elects_a_leader_without_a_committed_entry() -> None:
    c, x = _acked_then_damaged(remember=False)
    lead = _tick_until_leader(c, 200)
    assert lead in ("n1", "n2")  # n1 and n2 elect one of them, though neither has X
    c.propose(lead, b"Y")
    for _ in range(20):
        c.tick()
        c.stabilize()
    for node in ("n1", "n2"):  # a majority committed another entry at X's index: X, acknowledged, is lost
        core = c.core(node)
        assert core.commit_index > x and core.log.entries(x, x + 1, 1 << 20)[0].data != b"X"


def test_a_recovering_replica_does_not_vote_until_it_has_the_lost_entries_again() -> None:
    c, x = _acked_then_damaged(remember=True)
    n1 = c.core("n1")
    assert n1.recovering_until == x and n1.last_index == x - 1
    assert _tick_until_leader(c, 200) is None  # n2 alone cannot win: n1 grants nothing
    assert n1.role is Role.FOLLOWER and n1.dropped["vote_while_recovering"] > 0
    c.heal()
    c.restart("n0")
    lead = _tick_until_leader(c, 200)
    assert lead == "n0"  # only a node holding X can win
    c.propose(lead, b"after")
    for _ in range(20):
        c.tick()
        c.stabilize()
    for node in ("n0", "n1", "n2"):
        assert c.core(node).log.entries(x, x + 1, 1 << 20)[0].data == b"X"
    assert c.core("n1").recovering_until == 0 and c.nodes["n1"].recovering_until == 0
    assert c.stats["recoveries"] == 1


def test_recovering_survives_a_restart_before_the_entries_are_back() -> None:
    c, x = _acked_then_damaged(remember=True)
    c.tick()
    c.stabilize()
    c.restart("n1")
    assert c.core("n1").recovering_until == x


def test_a_recovering_core_refuses_votes_and_pre_votes_and_never_campaigns() -> None:
    log = MemoryLog([Entry(1, 1, b"a")])
    core = RaftCore(
        Config(id="a", peers=("a", "b", "c"), recovering_until=3), log, HardState(1, None, 1), random.Random(0)
    )
    assert core.recovering_until == 3
    for pre in (True, False):
        core.step(RequestVote(term=2, from_id="b", to_id="a", group="default", last_log_index=9, last_log_term=2,
                              pre_vote=pre))  # fmt: skip
    for _ in range(100):
        core.tick()
    rd = core.ready()
    votes = [m for m in [*rd.messages, *rd.persisted_messages] if isinstance(m, RequestVoteResponse)]
    assert votes and not any(m.vote_granted for m in votes)
    assert not any(isinstance(m, RequestVote) for m in [*rd.messages, *rd.persisted_messages])
    assert core.role is Role.FOLLOWER


def test_a_running_leader_that_finds_its_log_damaged_repairs_in_place_and_loses_nothing() -> None:
    """The leader's log loses its last entries while it runs (acknowledged and applied ones among them): it
    drops its core, starts recovering at once (no restart), never campaigns meanwhile, takes the entries
    again from the new leader, applies nothing twice, and votes again."""
    c = Cluster(3, seed=5)
    c.elect("n0")
    acked = [c.propose("n0", f"e{k}".encode()).last_index for k in range(20)]
    c.stabilize()
    before = list(c.nodes["n0"].applied)
    assert len(before) >= acked[-1]
    lost = c.repair_in_place("n0", acked[5])
    assert lost >= 14
    n0 = c.core("n0")
    assert n0.role is Role.FOLLOWER and n0.recovering_until == acked[-1] and n0.last_index == acked[5]
    term = n0.current_term
    c.isolate("n0")
    for _ in range(100):  # many election timeouts without a leader: it never campaigns
        c.tick("n0")
        c.stabilize()
    assert n0.role is Role.FOLLOWER and n0.current_term == term
    c.heal()
    lead = _tick_until_leader(c, 300)
    assert lead in ("n1", "n2")
    assert c.nodes["n0"].recovering_until == 0 and c.stats["recoveries"] == 1  # given back by the new leader
    c.propose(lead, b"after")
    for _ in range(20):
        c.tick()
        c.stabilize()
    applied = c.nodes["n0"].applied
    assert applied[: len(before)] == before and applied[-1].data == b"after"  # nothing twice, nothing skipped
    for node in ("n0", "n1", "n2"):
        assert [e.data for e in c.core(node).log.entries(acked[0], acked[-1] + 1, 1 << 20)] == [
            f"e{k}".encode() for k in range(20)
        ]
    assert c.stats["repairs"] == 1 and c.stats["crashes"] == 0
