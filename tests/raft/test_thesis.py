"""Rules beyond section 5, from Ongaro's thesis and DLedger's issues: pre-vote (9.6), check-quorum (6.2),
leader stickiness (4.2.3), leadership transfer (3.10), preferred leader, ReadIndex and lease reads (6.4),
back-pressure, inflight limits, fast backtracking and the Ready persist contract (10.2.1)."""

from __future__ import annotations

import pytest

from dledger.raft import (
    AppendEntries,
    AppendEntriesResponse,
    NotLeaderError,
    ProposalDroppedError,
    RaftInvariantError,
    ReadOnlyOption,
    ReadState,
    RequestVote,
    Role,
)
from dledger.storage_api import HardState
from dledger.testing import Cluster
from tests.raft.helpers import Node, data_entries, entries_with_terms, make_leader, of_type


def _ok(term: int, frm: str, match: int, ctx: bytes = b"") -> AppendEntriesResponse:
    return AppendEntriesResponse(
        term=term, from_id=frm, to_id="n1", group="default", success=True, match_index=match, read_context=ctx
    )


# ---- pre-vote (thesis 9.6) ----


def test_9_6_partitioned_node_rejoining_does_not_disrupt_the_leader() -> None:
    """Thesis 9.6: an isolated node keeps failing pre-votes without raising its term, so on rejoining
    it does not depose the leader."""
    c = Cluster(3, seed=4)
    lead = c.run_until_leader()
    term = c.core(lead).current_term
    lonely = next(i for i in c.ids if i != lead)
    c.isolate(lonely)
    for _ in range(100):
        c.tick()
        c.stabilize()
    assert c.core(lonely).current_term == term
    assert c.stats["sent.RequestVote"] > 0  # it did try (pre-votes)
    c.heal()
    for _ in range(30):
        c.tick()
        c.stabilize()
    assert c.leader() == lead and c.core(lead).current_term == term


def test_9_6_without_pre_vote_the_rejoining_node_disrupts() -> None:
    """Thesis 9.6, the contrast: without pre-vote (and check-quorum) the rejoining node's term deposes
    the leader. This shows the previous test can fail."""
    c = Cluster(3, seed=4, pre_vote=False, check_quorum=False)
    lead = c.run_until_leader()
    term = c.core(lead).current_term
    lonely = next(i for i in c.ids if i != lead)
    c.isolate(lonely)
    for _ in range(100):
        c.tick()
        c.stabilize()
    assert c.core(lonely).current_term > term
    c.heal()
    c.tick()
    c.stabilize()
    assert c.core(lead).current_term > term


def test_9_6_pre_vote_grant_does_not_change_the_voter() -> None:
    """Thesis 9.6: answering a pre-vote changes neither term nor vote, and the answer needs no persist."""
    n = Node(terms=[1], hard_state=HardState(1, None, 0))
    n.core.step(
        RequestVote(term=2, from_id="n2", to_id="n1", group="default", last_log_index=1, last_log_term=1, pre_vote=True)
    )
    rd = n.core.ready()
    assert rd.hard_state is None and rd.persisted_messages == []
    (resp,) = rd.messages
    assert resp.vote_granted and resp.term == 2  # type: ignore[union-attr]
    assert (n.core.current_term, n.core.voted_for) == (1, None)


# ---- check-quorum (thesis 6.2) and leader stickiness (4.2.3) ----


@pytest.mark.parametrize("check_quorum", [True, False])
def test_6_2_check_quorum_leader_steps_down_without_a_quorum(check_quorum: bool) -> None:
    """Thesis 6.2: a leader that has not heard from a quorum within an election timeout steps down."""
    c = Cluster(3, seed=2, check_quorum=check_quorum, pre_vote=True)
    lead = c.run_until_leader()
    c.isolate(lead)
    for _ in range(2 * c.core(lead).config.election_tick):
        c.tick(lead)
        c.stabilize()
    assert (c.core(lead).role is Role.LEADER) is (not check_quorum)


def test_4_2_3_follower_that_heard_a_leader_ignores_vote_requests() -> None:
    """Thesis 4.2.3: within the minimum election timeout after hearing the leader, a follower ignores a
    RequestVote (and keeps its term), unless it carries the transfer flag."""
    n = Node(terms=[1], hard_state=HardState(1, None, 0))
    n.core.step(AppendEntries(term=1, from_id="n2", to_id="n1", group="default", prev_log_index=1, prev_log_term=1))
    n.drain()
    vote = RequestVote(term=5, from_id="n3", to_id="n1", group="default", last_log_index=9, last_log_term=1)
    n.core.step(vote)
    assert n.core.current_term == 1 and n.core.dropped["in_lease"] == 1
    assert of_type(n.drain(), RequestVote) == []
    for _ in range(n.core.config.election_tick):
        n.core.tick()
    n.core.step(vote)  # after T ticks without the leader it listens again
    assert n.core.current_term == 5 and n.core.voted_for == "n3"


def test_4_2_3_transfer_flag_overrides_stickiness() -> None:
    n = Node(terms=[1], hard_state=HardState(1, None, 0))
    n.core.step(AppendEntries(term=1, from_id="n2", to_id="n1", group="default", prev_log_index=1, prev_log_term=1))
    n.core.step(
        RequestVote(term=2, from_id="n3", to_id="n1", group="default", last_log_index=1, last_log_term=1, transfer=True)
    )
    assert n.core.current_term == 2 and n.core.voted_for == "n3"


# ---- leadership transfer (thesis 3.10) and preferred leader ----


def test_3_10_transfer_to_an_up_to_date_follower() -> None:
    c = Cluster(3, seed=1)
    lead = c.run_until_leader()
    term = c.core(lead).current_term
    target = next(i for i in c.ids if i != lead)
    c.core(lead).transfer_leadership(target)
    c.stabilize()
    assert c.leader() == target and c.core(target).current_term == term + 1
    assert c.stats["sent.TimeoutNow"] == 1


def test_3_10_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    """Thesis 3.10: TimeoutNow goes only once the target's log matches the leader's."""
    c = Cluster(3, seed=1)
    lead = c.run_until_leader()
    target = next(i for i in c.ids if i != lead)
    c.isolate(target)
    for k in range(5):
        c.propose(lead, b"%d" % k)
    c.stabilize()
    c.heal()
    c.core(lead).transfer_leadership(target)
    c.stabilize()
    assert c.stats["sent.TimeoutNow"] == 0  # the target is behind and its progress is paused
    c.tick(lead)  # a heartbeat answer resumes replication; the catch-up then triggers TimeoutNow
    c.stabilize()
    assert c.stats["sent.TimeoutNow"] == 1
    assert c.leader() == target
    assert data_entries(c.nodes[target].applied)[:5] == [b"0", b"1", b"2", b"3", b"4"]


def test_3_10_transfer_refuses_proposals_then_gives_up_after_an_election_timeout() -> None:
    c = Cluster(3, seed=1)
    lead = c.run_until_leader()
    target = next(i for i in c.ids if i != lead)
    c.isolate(target)
    c.core(lead).transfer_leadership(target)
    with pytest.raises(ProposalDroppedError) as err:
        c.propose(lead, b"x")
    assert err.value.reason == "transferring"
    for _ in range(c.core(lead).config.election_tick):
        c.tick(lead)
        c.stabilize()
    assert c.core(lead).lead_transferee is None and c.leader() == lead
    c.propose(lead, b"after")
    c.stabilize()
    assert b"after" in data_entries(c.nodes[lead].applied)


def test_3_10_transfer_on_a_follower_raises_not_leader() -> None:
    c = Cluster(3, seed=1)
    lead = c.run_until_leader()
    follower = next(i for i in c.ids if i != lead)
    with pytest.raises(NotLeaderError):
        c.core(follower).transfer_leadership(lead)


def test_preferred_leader_gets_leadership_back_once_caught_up() -> None:
    """DLedger's preferredLeaderIds: the leader hands over to the preferred node once it is caught up."""
    c = Cluster(3, seed=1, preferred_leader="n2")
    c.elect("n0")
    c.isolate("n2")
    c.propose("n0", b"while away")
    for _ in range(5):
        c.tick()
        c.stabilize()
    assert c.leader() == "n0"  # n2 is behind and unreachable: no transfer
    c.heal()
    for _ in range(20):
        c.tick()
        c.stabilize()
    assert c.leader() == "n2"
    assert b"while away" in data_entries(c.nodes["n2"].applied)


# ---- reads (thesis 6.4) ----


def test_6_4_read_index_waits_for_the_terms_first_commit() -> None:
    n = Node()
    make_leader(n)
    noop = n.core.last_index
    n.core.read_index(b"r1")
    assert [m for m in of_type(n.drain(), AppendEntries) if m.read_context != n.core.read_only.context] == []
    assert n.core.read_only.waiting == [b"r1"]
    sent = n.step_all([_ok(1, "n2", noop)])  # the no-op commits: now the read starts a round
    assert n.core.commit_index == noop
    beats = [m for m in of_type(sent, AppendEntries) if m.read_context]
    ctx = beats[-1].read_context
    n.core.step(_ok(1, "n3", noop, ctx))
    n.drain()
    assert n.last_ready is not None and list(n.last_ready.read_states) == [ReadState(noop, b"r1")]


def test_6_4_read_index_needs_a_quorum_of_acknowledgements() -> None:
    ids = ["n1", "n2", "n3", "n4", "n5"]
    n = Node(peers=ids)
    make_leader(n)
    noop = n.core.last_index
    n.step_all([_ok(1, "n2", noop), _ok(1, "n3", noop)])
    n.core.read_index(b"r")
    ctx = n.core.read_only.context
    states: list[ReadState] = []
    for frm in ("n2", "n3"):
        n.core.step(_ok(1, frm, noop, ctx))
        n.drain()
        states += n.last_ready.read_states if n.last_ready else []
        if frm == "n2":
            assert states == []  # leader + n2 is not a quorum of 5
    assert states == [ReadState(noop, b"r")]


def test_6_4_old_acknowledgements_do_not_confirm_a_newer_read() -> None:
    n = Node()
    make_leader(n)
    noop = n.core.last_index
    n.step_all([_ok(1, "n2", noop)])
    old_ctx = n.core.read_only.context
    n.core.read_index(b"r")
    n.core.step(_ok(1, "n2", noop, old_ctx))  # echoes a round sent before the read began
    n.drain()
    assert n.core.read_only.pending


def test_6_4_deposed_leader_cannot_answer_reads() -> None:
    c = Cluster(3, seed=6)
    old = c.run_until_leader()
    c.isolate(old)
    c.core(old).read_index(b"stale?")
    for _ in range(40):
        c.tick()
        c.stabilize()
    new = c.leader()
    assert new is not None and new != old
    c.propose(new, b"newer")
    c.stabilize()
    c.heal()
    for _ in range(5):
        c.tick()
        c.stabilize()
    assert c.nodes[old].read_states == []
    assert c.core(old).role is Role.FOLLOWER


def test_6_4_read_on_a_follower_raises_not_leader() -> None:
    c = Cluster(3, seed=6)
    lead = c.run_until_leader()
    follower = next(i for i in c.ids if i != lead)
    with pytest.raises(NotLeaderError) as err:
        c.core(follower).read_index(b"r")
    assert err.value.leader_id == lead


def test_6_4_lease_read_is_answered_locally_while_the_lease_holds() -> None:
    c = Cluster(3, seed=2, read_only=ReadOnlyOption.LEASE)
    lead = c.run_until_leader()
    c.tick()
    c.stabilize()  # a heartbeat round is acknowledged: the lease starts
    c.core(lead).read_index(b"fast")
    rd = c.core(lead).ready()
    assert rd.read_states == [ReadState(c.core(lead).commit_index, b"fast")]
    assert rd.messages == []  # no round trip
    c.nodes[lead].pending = rd
    c.persist(lead)
    # isolated, the lease runs out before an election timeout; then reads need a quorum again
    c.isolate(lead)
    for _ in range(c.core(lead).config.election_tick - 1):
        c.tick(lead)
        c.stabilize()
    c.core(lead).read_index(b"late")
    c.stabilize()
    assert [rs.context for rs in c.nodes[lead].read_states] == [b"fast"]


def test_6_4_lease_is_disabled_once_a_transfer_sent_timeout_now() -> None:
    c = Cluster(3, seed=2, read_only=ReadOnlyOption.LEASE)
    lead = c.run_until_leader()
    c.tick()
    c.stabilize()
    target = next(i for i in c.ids if i != lead)
    c.isolate(target)
    c.core(lead).transfer_leadership(target)  # target is up to date: TimeoutNow goes now (and is lost)
    c.core(lead).read_index(b"r")
    assert not c.core(lead).ready().read_states


# ---- back-pressure, inflight limits, fast backtracking ----


def test_back_pressure_refuses_proposals_beyond_max_uncommitted_bytes() -> None:
    n = Node(max_uncommitted_bytes=100)
    make_leader(n)
    n.core.propose(b"x" * 60)
    with pytest.raises(ProposalDroppedError) as err:
        n.core.propose(b"y" * 60)
    assert err.value.reason == "busy"
    n.drain()
    n.step_all([_ok(1, "n2", n.core.last_index)])  # commits the first proposal
    n.core.propose(b"y" * 60)


def test_back_pressure_lets_one_oversized_batch_through_when_idle() -> None:
    n = Node(max_uncommitted_bytes=10)
    make_leader(n)
    n.core.propose(b"z" * 50)  # nothing uncommitted: accepted, else it could never be proposed


@pytest.mark.parametrize(("limit", "kw"), [(3, {"max_inflight_msgs": 3}), (3, {"max_inflight_bytes": 100})])
def test_inflight_limits_pause_a_follower(limit: int, kw: dict[str, int]) -> None:
    n = Node(**kw)  # type: ignore[arg-type]
    make_leader(n)
    noop = n.core.last_index
    n.step_all([_ok(1, "n2", noop), _ok(1, "n3", noop)])
    to_n2 = []
    for k in range(10):
        n.core.propose(b"%02d" % k * 20)  # 40 bytes each
        to_n2 += [m for m in of_type(n.drain(), AppendEntries) if m.to_id == "n2" and m.entries]
    assert len(to_n2) == limit
    sent = n.step_all([_ok(1, "n2", to_n2[0].entries[-1].index)])  # one acknowledged: one more may go
    more = [m for m in of_type(sent, AppendEntries) if m.to_id == "n2" and m.entries]
    assert len(more) == 1 and more[0].entries[-1].index == n.core.last_index  # the backlog in one batch


def test_an_append_carries_at_most_max_append_entries_however_small_they_are() -> None:
    """Empty entries weigh nothing against max_append_bytes, but each costs a head on the wire: a follower far
    behind gets them in messages of at most max_append_entries, all of them in order."""
    n = Node(max_append_entries=5)
    make_leader(n)
    noop = n.core.last_index
    n.step_all([_ok(1, "n2", noop), _ok(1, "n3", noop)])
    n.core.propose_batch([b""] * 23)
    to_n2 = [m for m in of_type(n.drain(), AppendEntries) if m.to_id == "n2" and m.entries]
    assert [len(m.entries) for m in to_n2] == [5, 5, 5, 5, 3]
    assert [e.index for m in to_n2 for e in m.entries] == list(range(noop + 1, noop + 24))


def test_fast_backtracking_needs_one_reject_per_conflicting_term_not_per_entry() -> None:
    """A follower with 200 conflicting entries of one old term is repaired after one or two rejects."""
    leader_log = entries_with_terms([1] + [3] * 200)
    follower_log = entries_with_terms([1] + [2] * 200)
    c = Cluster(
        ids=["L", "F", "V"],
        seed=9,
        logs={"L": leader_log, "F": follower_log, "V": leader_log},
        hard_states={i: HardState(3, None, 0) for i in ("L", "F", "V")},
        max_append_bytes=1 << 20,
    )
    c.elect("L")
    c.stabilize()
    assert c.nodes["F"].log.read(1, 203) == c.nodes["L"].log.read(1, 203)
    assert c.stats["rejects"] <= 2


# ---- the Ready persist contract (thesis 10.2.1) ----


def test_append_response_waits_for_persist_and_a_crash_loses_unpersisted_entries() -> None:
    c = Cluster(3, seed=1)
    lead = c.run_until_leader()
    f1, f2 = (i for i in c.ids if i != lead)
    c.isolate(f2)
    p = c.propose(lead, b"x")
    c.handle_ready(lead)
    c.deliver_all()  # f1 got the entry
    assert c.process(f1)
    assert all(not isinstance(m, AppendEntriesResponse) for m in c.network)  # not before persist
    c.crash(f1)
    assert c.nodes[f1].log.last_index < p.last_index  # the entry was never persisted
    c.restart(f1)
    c.stabilize()
    assert c.core(lead).commit_index < p.last_index  # nobody counted the lost write
    for _ in range(3):
        c.tick()
        c.stabilize()
    assert c.core(lead).commit_index >= p.last_index  # re-sent after the restart


def test_ready_twice_without_advance_is_a_bug() -> None:
    n = Node()
    n.core.step(RequestVote(term=1, from_id="n2", to_id="n1", group="default"))
    n.core.ready()
    with pytest.raises(RaftInvariantError):
        n.core.ready()


# ---- regressions: schedules the simulation can draw ----


def test_regression_lost_append_in_replicate_state_is_resent() -> None:
    """In REPLICATE state the leader moves next_index past an AppendEntries that may be lost; with no new
    proposals nothing would re-send it and the follower would stay behind forever. A response to a later
    message (a heartbeat) that still lacks the entries sends the follower back to PROBE from its match index."""
    c = Cluster(3, seed=0)
    lead = c.run_until_leader()
    lagging = next(i for i in c.ids if i != lead)
    p = c.propose(lead, b"x")
    c.handle_ready(lead)
    lost = [m for m in c.network if m.to_id == lagging and isinstance(m, AppendEntries) and m.entries]
    assert lost
    c.network = [m for m in c.network if m not in lost]
    c.stabilize()
    assert c.nodes[lagging].log.last_index < p.last_index
    for _ in range(2 * c.core(lead).config.heartbeat_tick):
        c.tick()
        c.stabilize()
    assert c.nodes[lagging].log.last_index == p.last_index
    assert data_entries(c.nodes[lagging].applied) == [b"x"]


def test_regression_lost_append_response_is_recovered() -> None:
    """The same for a lost acknowledgement: the leader's match index for the follower catches up."""
    c = Cluster(3, seed=0)
    lead = c.run_until_leader()
    follower = next(i for i in c.ids if i != lead)
    p = c.propose(lead, b"x")
    c.handle_ready(lead)
    c.deliver_all()
    c.handle_ready(follower)
    c.network = [m for m in c.network if not (m.from_id == follower and isinstance(m, AppendEntriesResponse))]
    c.stabilize()
    assert c.core(lead).progress[follower].match_index < p.last_index
    for _ in range(2 * c.core(lead).config.heartbeat_tick):
        c.tick()
        c.stabilize()
    assert c.core(lead).progress[follower].match_index == p.last_index


def test_regression_stale_leader_of_an_old_term_is_not_taken_for_the_leader() -> None:
    """Without check-quorum a leader cut off early stays leader of term 2 while the others move to a much
    higher term. The simulation's final check must not take it for the leader; the core itself is fine: once
    it hears the newer term it steps down and a real leader brings every node up to date."""
    c = Cluster(3, seed=442, election_tick=6, heartbeat_tick=2, pre_vote=False, check_quorum=False)
    old = c.run_until_leader()
    a, b = (i for i in c.ids if i != old)
    c.partition([old], [a, b])
    for _ in range(60):
        c.tick()
        c.stabilize()
    new = next(i for i in (a, b) if c.core(i).role is Role.LEADER)
    p = c.propose(new, b"acked")
    c.stabilize()
    c.heal()
    assert c.core(old).role is Role.LEADER and c.core(old).current_term < c.core(new).current_term
    for _ in range(5):
        c.tick()
        c.stabilize()
    assert c.core(old).role is Role.FOLLOWER
    assert c.nodes[old].applied[p.last_index - 1].data == b"acked"


def test_progress_comes_down_when_a_follower_lost_acknowledged_entries() -> None:
    """Async flush, power loss: a follower's log ends below the match index the leader holds for it. The
    leader must probe from the follower's real end, not at match + 1 forever."""
    from dledger.raft.progress import Progress, ProgressState

    pr = Progress(next_index=1, max_inflight_msgs=8, max_inflight_bytes=1 << 20)
    pr.maybe_update(20)
    pr.become_replicate()
    # a stale reject (about an index known to match) from a follower whose log is intact changes nothing
    assert not pr.maybe_decrease_to(rejected=15, hint=15, last_log_index=25)
    assert pr.match_index == 20
    # the follower now ends at 14: it lost 15..20, which it had acknowledged
    assert pr.maybe_decrease_to(rejected=22, hint=14, last_log_index=14)
    assert (pr.match_index, pr.next_index) == (14, 15)
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.next_index == 15
