"""One test per rule of the Raft paper, section 5 (and Figures 7 and 8), tagged with its section.

Core-level tests drive one RaftCore with hand-made messages; cluster-level ones use the harness.
"""

from __future__ import annotations

import pytest

from dledger.raft import (
    AppendEntries,
    AppendEntriesResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from dledger.storage_api import Entry, HardState
from dledger.testing import Cluster
from tests.raft.helpers import Node, data_entries, entries_with_terms, make_leader, of_type


def _ae(term: int, frm: str = "n2", to: str = "n1", **kw: object) -> AppendEntries:
    return AppendEntries(term=term, from_id=frm, to_id=to, group="default", **kw)  # type: ignore[arg-type]


def _ok(term: int, frm: str, match: int, to: str = "n1") -> AppendEntriesResponse:
    return AppendEntriesResponse(term=term, from_id=frm, to_id=to, group="default", success=True, match_index=match)


# ---- §5.1 terms ----


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_5_1_higher_term_turns_any_role_into_follower(role: str) -> None:
    """§5.1: a server that sees a larger term updates its term and reverts to follower."""
    n = Node(pre_vote=False)
    if role == "leader":
        make_leader(n)
    elif role == "candidate":
        for _ in range(40):
            n.core.tick()
            if n.core.role is Role.CANDIDATE:
                break
    assert n.core.role.value == role
    n.core.step(_ae(9, prev_log_index=0, prev_log_term=0))
    assert (n.core.role, n.core.current_term, n.core.leader_id) == (Role.FOLLOWER, 9, "n2")
    assert n.core.voted_for is None


def test_5_1_stale_term_request_is_rejected() -> None:
    """§5.1: a request with a stale term is rejected; the sender learns the newer term."""
    n = Node(hard_state=HardState(5, None, 0))
    n.core.step(_ae(3, prev_log_index=0, prev_log_term=0, entries=(Entry(1, 3, b"x"),)))
    sent = n.drain()
    assert n.core.dropped["stale_term"] == 1
    assert n.log.last_index == 0
    (resp,) = of_type(sent, AppendEntriesResponse)
    assert resp.term == 5 and not resp.success


# ---- §5.2 leader election ----


def test_5_2_follower_times_out_and_becomes_candidate() -> None:
    """§5.2: without heartbeats a follower increments its term, votes for itself and asks every peer."""
    n = Node(pre_vote=False)
    timeout = n.core.randomized_election_timeout
    for _ in range(timeout - 1):
        n.core.tick()
    assert n.core.role is Role.FOLLOWER
    n.core.tick()
    assert (n.core.role, n.core.current_term, n.core.voted_for) == (Role.CANDIDATE, 1, "n1")
    rd = n.core.ready()
    assert rd.hard_state == HardState(1, "n1", 0)
    assert rd.messages == []  # the vote requests wait until our own vote is durable
    assert sorted(m.to_id for m in of_type(rd.persisted_messages, RequestVote)) == ["n2", "n3"]


def test_5_2_election_timeouts_are_randomized_in_t_2t() -> None:
    """§5.2: election timeouts are chosen randomly from a fixed interval ([T, 2T) ticks)."""
    seen = {Node(seed=s, election_tick=10).core.randomized_election_timeout for s in range(60)}
    assert min(seen) >= 10 and max(seen) < 20
    assert len(seen) >= 5


@pytest.mark.parametrize(
    ("peers", "granted", "rejected", "expected"),
    [
        (1, 0, 0, Role.LEADER),
        (3, 1, 0, Role.LEADER),
        (3, 0, 2, Role.FOLLOWER),
        (5, 1, 0, Role.CANDIDATE),
        (5, 2, 0, Role.LEADER),
        (5, 1, 3, Role.FOLLOWER),
        (5, 0, 2, Role.CANDIDATE),
    ],
)
def test_5_2_candidate_wins_with_a_majority_of_votes(peers: int, granted: int, rejected: int, expected: Role) -> None:
    """§5.2: a candidate wins with votes from a majority, and loses once a majority refused."""
    ids = [f"n{i}" for i in range(1, peers + 1)]
    n = Node(peers=ids, pre_vote=False)
    while n.core.role is Role.FOLLOWER:
        n.core.tick()
    others = ids[1:]
    for k, frm in enumerate(others[: granted + rejected]):
        n.core.step(RequestVoteResponse(term=1, from_id=frm, to_id="n1", group="default", vote_granted=k < granted))
    assert n.core.role is expected


def test_5_2_each_server_votes_once_per_term_first_come_first_served() -> None:
    """§5.2: each server votes for at most one candidate in a term; the vote is persisted before answering."""
    n = Node()
    n.core.step(RequestVote(term=1, from_id="n2", to_id="n1", group="default"))
    rd = n.core.ready()
    assert rd.hard_state == HardState(1, "n2", 0)
    (grant,) = of_type(rd.persisted_messages, RequestVoteResponse)
    assert grant.vote_granted and grant.to_id == "n2"
    n.core.advance(rd)
    n.core.step(RequestVote(term=1, from_id="n3", to_id="n1", group="default"))
    (refusal,) = of_type(n.drain(), RequestVoteResponse)
    assert not refusal.vote_granted and n.core.voted_for == "n2"
    # a retransmitted request from the same candidate gets the same answer
    n.core.step(RequestVote(term=1, from_id="n2", to_id="n1", group="default"))
    (again,) = of_type(n.drain(), RequestVoteResponse)
    assert again.vote_granted


def test_5_2_candidate_accepts_a_leader_of_its_term() -> None:
    """§5.2: a candidate that receives AppendEntries from a leader of its term returns to follower."""
    n = Node(pre_vote=False)
    while n.core.role is Role.FOLLOWER:
        n.core.tick()
    n.core.step(_ae(1, frm="n3", prev_log_index=0, prev_log_term=0))
    assert (n.core.role, n.core.leader_id, n.core.current_term) == (Role.FOLLOWER, "n3", 1)


def test_5_2_split_vote_starts_a_new_election_with_a_new_term() -> None:
    """§5.2: if no candidate wins, each times out and starts a new election with a higher term."""
    n = Node(pre_vote=False)
    while n.core.role is Role.FOLLOWER:
        n.core.tick()
    assert n.core.current_term == 1
    for _ in range(2 * n.core.config.election_tick):
        n.core.tick()
    assert n.core.role is Role.CANDIDATE and n.core.current_term >= 2


def test_5_2_leader_sends_heartbeats_to_prevent_elections() -> None:
    """§5.2: the leader sends periodic empty AppendEntries; followers that get them never campaign."""
    c = Cluster(3, seed=3)
    lead = c.run_until_leader()
    term = c.core(lead).current_term
    for _ in range(100):
        c.tick()
        c.stabilize()
    assert c.leader() == lead and c.core(lead).current_term == term
    assert c.stats["sent.AppendEntries"] >= 100


# ---- §5.3 log replication ----


def test_5_3_leader_appends_and_replicates_a_proposal() -> None:
    """§5.3: the leader appends the command to its log and sends AppendEntries to every follower."""
    n = Node()
    make_leader(n)
    noop = n.core.last_index
    n.step_all([_ok(1, "n2", noop), _ok(1, "n3", noop)])
    p = n.core.propose(b"cmd")
    sent = of_type(n.drain(), AppendEntries)
    assert {m.to_id for m in sent} == {"n2", "n3"}
    assert all(m.entries[-1] == Entry(p.last_index, p.term, b"cmd") for m in sent)


def test_5_3_follower_rejects_when_prev_entry_does_not_match() -> None:
    """§5.3: the consistency check: no entry at prev_log_index with prev_log_term means reject."""
    n = Node(terms=[1, 1, 2], hard_state=HardState(2, None, 0))
    n.core.step(_ae(3, prev_log_index=3, prev_log_term=3, entries=(Entry(4, 3, b"x"),)))
    (resp,) = of_type(n.drain(), AppendEntriesResponse)
    assert not resp.success and resp.reject_index == 3
    assert (resp.conflict_index, resp.conflict_term) == (3, 2)  # the last index whose term is <= 3
    assert n.log.last_index == 3


def test_5_3_follower_deletes_conflicting_entries_and_appends() -> None:
    """§5.3: an existing entry that conflicts (same index, different term) is deleted with all that follow."""
    n = Node(terms=[1, 1, 1, 1], hard_state=HardState(1, None, 0))
    n.core.step(_ae(2, prev_log_index=2, prev_log_term=1, entries=(Entry(3, 2, b"new"),), leader_commit=0))
    (resp,) = of_type(n.drain(), AppendEntriesResponse)
    assert resp.success and resp.match_index == 3
    assert [e.term for e in n.log.read(1, n.log.last_index + 1)] == [1, 1, 2]


def test_5_3_duplicate_append_is_idempotent() -> None:
    """§5.3/§5.5: a retransmitted AppendEntries changes nothing (RPCs are idempotent)."""
    n = Node(terms=[1], hard_state=HardState(1, None, 0))
    msg = _ae(1, prev_log_index=1, prev_log_term=1, entries=(Entry(2, 1, b"a"), Entry(3, 1, b"b")))
    n.core.step(msg)
    n.drain()
    n.core.step(_ae(1, prev_log_index=3, prev_log_term=1, entries=(Entry(4, 1, b"c"),)))
    n.drain()
    n.core.step(msg)  # late duplicate must not truncate entry 4
    (resp,) = of_type(n.drain(), AppendEntriesResponse)
    assert resp.success and resp.match_index == 3
    assert n.log.last_index == 4


def test_5_3_leader_commits_once_a_majority_stored_the_entry() -> None:
    """§5.3: an entry is committed once the leader replicated it on a majority; followers then apply it."""
    c = Cluster(3, seed=1)
    lead = c.run_until_leader()
    f1, f2 = (i for i in c.ids if i != lead)
    c.isolate(f2)
    p = c.propose(lead, b"x")
    c.process(lead)  # the AppendEntries go out before the leader's own write
    c.deliver_all()  # f1 receives; f2's copy is lost
    assert c.core(lead).commit_index < p.last_index
    c.stabilize()
    assert c.core(lead).commit_index == p.last_index
    c.stabilize()
    assert data_entries(c.nodes[f1].applied) == [b"x"]
    assert data_entries(c.nodes[f2].applied) == []


def test_5_3_leader_counts_itself_only_once_persisted() -> None:
    """Thesis 10.2.1: the leader sends before its write completes but counts itself only when persisted."""
    n = Node()
    make_leader(n)
    noop = n.core.last_index
    n.step_all([_ok(n.core.current_term, "n2", noop)])
    assert n.core.commit_index == noop
    p = n.core.propose(b"x")
    rd = n.core.ready()  # not persisted yet
    n.core.step(_ok(p.term, "n2", p.last_index))
    assert n.core.commit_index == noop  # n2 + not-yet-durable leader is no quorum
    n.log.append(rd.entries)
    n.core.advance(rd)
    assert n.core.commit_index == p.last_index


def test_5_3_heartbeat_carries_commit_bounded_by_match() -> None:
    """§5.3 (etcd): a heartbeat carries min(match, commit), so a follower never commits what it may lack."""
    n = Node()
    make_leader(n)
    n.step_all([_ok(n.core.current_term, "n2", n.core.last_index)])
    for k in range(3):
        n.core.propose(b"%d" % k)
    n.drain()
    n.step_all([_ok(n.core.current_term, "n2", n.core.last_index)])
    commit = n.core.commit_index
    for _ in range(n.core.config.heartbeat_tick):
        n.core.tick()
    beats = {m.to_id: m for m in of_type(n.drain(), AppendEntries) if not m.entries}
    assert beats["n2"].leader_commit == commit
    assert beats["n3"].leader_commit == 0  # n3 acknowledged nothing yet


def test_5_3_follower_never_commits_past_what_matches() -> None:
    """A follower's commit index stays within the entries it knows match the leader (openmessaging/dledger#316
    is that bug)."""
    n = Node(terms=[1, 1, 1, 1, 1], hard_state=HardState(1, None, 0))
    # a new leader of term 2 whose log matches ours only up to index 2
    n.core.step(_ae(2, prev_log_index=2, prev_log_term=1, leader_commit=5))
    n.drain()
    assert n.core.commit_index == 2
    n.core.step(_ae(2, prev_log_index=2, prev_log_term=1, entries=(Entry(3, 2, b"n"),), leader_commit=9))
    n.drain()
    assert n.core.commit_index == 3 and n.log.last_index == 3


# ---- Figure 7: the leader repairs any follower log ----

FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_figure_7_leader_brings_every_follower_log_in_line(case: str) -> None:
    """§5.3 Figure 7: whatever the follower's log (missing, extra or conflicting entries), after the
    leader of term 8 replicates, the follower's log equals the leader's; rejections stay few (one per
    conflicting term, thanks to the conflict hints)."""
    leader_log = entries_with_terms(FIG7_LEADER)
    follower_log = entries_with_terms(FIG7_FOLLOWERS[case])
    c = Cluster(
        ids=["L", "F", "V"],
        seed=7,
        logs={"L": leader_log, "F": follower_log, "V": leader_log},
        hard_states={i: HardState(7, None, 0) for i in ("L", "F", "V")},
    )
    c.elect("L")
    assert c.core("L").current_term == 8
    c.propose("L", b"term8")
    c.stabilize()
    final = c.nodes["L"].log.read(1, c.nodes["L"].log.last_index + 1)
    assert c.nodes["F"].log.read(1, c.nodes["F"].log.last_index + 1) == final
    assert final[: len(leader_log)] == leader_log
    distinct_terms = len(set(FIG7_FOLLOWERS[case]))
    assert c.stats["rejects"] <= distinct_terms  # fast backtracking: at most one reject per term
    assert c.core("L").dropped["bad_index"] == 0


# ---- §5.4 safety ----


@pytest.mark.parametrize(
    ("cand_last_index", "cand_last_term", "granted"),
    [(3, 2, True), (4, 2, True), (2, 2, False), (9, 1, False), (1, 3, True)],
)
def test_5_4_1_vote_only_for_an_up_to_date_log(cand_last_index: int, cand_last_term: int, granted: bool) -> None:
    """§5.4.1 (openmessaging/dledger#52): a voter denies its vote to a candidate whose log is less up-to-date."""
    n = Node(terms=[1, 2, 2], hard_state=HardState(2, None, 0))
    n.core.step(
        RequestVote(
            term=3,
            from_id="n2",
            to_id="n1",
            group="default",
            last_log_index=cand_last_index,
            last_log_term=cand_last_term,
        )
    )
    (resp,) = of_type(n.drain(), RequestVoteResponse)
    assert resp.vote_granted is granted


def test_5_4_1_node_with_less_data_cannot_win() -> None:
    """§5.4.1 (openmessaging/dledger#52): however often it campaigns, a node missing committed entries never leads."""
    full = entries_with_terms([1, 1, 1])
    c = Cluster(3, seed=5, logs={"n0": full[:1], "n1": full, "n2": full}, hard_states={})
    for _ in range(300):
        c.tick("n0")
        c.stabilize()
        assert c.core("n0").role is not Role.LEADER


def test_5_4_2_figure_8_old_term_entry_not_committed_by_counting_replicas() -> None:
    """§5.4.2 Figure 8 (c): the leader of term 4 replicated index 2 (term 2) on a majority; it must not
    commit it by counting replicas, only together with an entry of its own term."""
    ids = ["n1", "n2", "n3", "n4", "n5"]
    n = Node(peers=ids, terms=[1, 2], hard_state=HardState(3, None, 1), pre_vote=False)
    make_leader(n)  # term 4, no-op at index 3
    assert n.core.current_term == 4 and n.core.last_index == 3
    n.step_all([_ok(4, "n2", 2), _ok(4, "n3", 2)])  # S1, S2, S3 hold index 2 (term 2): a majority
    assert n.core.commit_index == 1
    n.step_all([_ok(4, "n2", 3)])
    assert n.core.commit_index == 1  # the no-op is on S1, S2 only
    n.step_all([_ok(4, "n3", 3)])
    assert n.core.commit_index == 3  # index 3 (term 4) commits, and index 2 with it


def test_5_4_3_committed_entries_survive_leader_changes() -> None:
    """§5.4.3: once committed, an entry is in every later leader's log and applied everywhere."""
    c = Cluster(5, seed=11)
    acked = []
    for round_ in range(4):
        lead = c.run_until_leader()
        acked.append(c.propose(lead, b"r%d" % round_))
        c.stabilize()
        c.crash(lead)
        c.run_until_leader()
        c.restart(lead)
    c.run_until_leader()
    c.stabilize()
    for node in c.nodes.values():
        assert data_entries(node.applied) == [b"r0", b"r1", b"r2", b"r3"]
        assert all(node.applied[p.last_index - 1].term == p.term for p in acked)


def test_ready_committed_entries_are_bounded_per_ready() -> None:
    """A restart with a large committed backlog hands committed entries out in bounded batches."""
    n = Node(terms=[1] * 100, hard_state=HardState(1, None, 100), max_committed_bytes=10)
    sizes = []
    while n.core.has_ready():
        rd = n.core.ready()
        sizes.append(len(rd.committed_entries))
        assert sum(len(e.data) for e in rd.committed_entries) <= 10  # entries are 3-6 bytes each
        n.core.advance(rd)
    assert sum(sizes) == 100 and len(sizes) >= 40
    assert n.core.applied == 100
