"""Membership changes and learners (thesis chapter 4): one test per rule, on single cores and the Cluster."""

from __future__ import annotations

import itertools
import random

import pytest

from dledger.raft import (
    AppendEntries,
    ConfChange,
    ConfChangeError,
    ConfChangeOp,
    Config,
    Membership,
    NotLeaderError,
    ProposalDroppedError,
    RaftCore,
    ReadOnlyOption,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
    apply_change,
)
from dledger.raft.quorum import majorities_intersect, majority
from dledger.raft.ready import persist_ready
from dledger.storage_api import Entry, EntryKind, HardState
from dledger.testing import Cluster, MemoryHardStateStore, MemoryLog, SafetyChecker
from tests.raft.helpers import Node, make_leader

ADD, PROMOTE, REMOVE = ConfChangeOp.ADD_LEARNER, ConfChangeOp.PROMOTE, ConfChangeOp.REMOVE


def _m(voters: str, learners: str = "") -> Membership:
    return Membership(dict.fromkeys(voters.split(), ""), dict.fromkeys(learners.split(), ""))


def _conf_entry(index: int, term: int, m: Membership) -> Entry:
    return Entry(index, term, m.encode(), EntryKind.CONFIG)


# ---- the membership value ----


def test_membership_encoding_is_deterministic_and_round_trips() -> None:
    a = Membership({"b": "h2:1", "a": "h1:1"}, {"c": ""})
    b = Membership({"a": "h1:1", "b": "h2:1"}, {"c": ""})
    assert a.encode() == b.encode()
    assert Membership.decode(a.encode()) == a
    assert a.members == {"a", "b", "c"} and a.is_voter("a") and a.is_learner("c") and not a.is_voter("c")
    assert Membership.initial(["x", "y"]) == Membership({"x": "", "y": ""})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{", "JSON"),
        (b"[]", "object"),
        (b'{"v":2,"voters":{"a":""}}', "version"),
        (b'{"v":1,"voters":{}}', "at least one voter"),
        (b'{"v":1,"voters":{"":""}}', "empty"),
        (b'{"v":1,"voters":{"a":1}}', "string"),
        (b'{"v":1,"voters":["a"]}', "mapping"),
        (b'{"v":1,"voters":{"a":""},"learners":{"a":""}}', "both voter and learner"),
        (b'{"v":1,"voters":{"a":""},"x":1}', "unknown fields"),
        (b"\xff", "JSON"),
    ],
)
def test_membership_decode_rejects_malformed(data: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Membership.decode(data)


def test_apply_change_rules() -> None:
    m = _m("a b", "c")
    assert apply_change(m, ConfChange(ADD, "d", "h:4")) == Membership({"a": "", "b": ""}, {"c": "", "d": "h:4"})
    assert apply_change(m, ConfChange(PROMOTE, "c")) == _m("a b c")
    assert apply_change(m, ConfChange(REMOVE, "a")) == _m("b", "c")
    assert apply_change(m, ConfChange(REMOVE, "c")) == _m("a b")
    for bad in (
        ConfChange(ADD, "a"),
        ConfChange(ADD, "c"),
        ConfChange(PROMOTE, "a"),
        ConfChange(PROMOTE, "z"),
        ConfChange(REMOVE, "z"),
        ConfChange(ADD, ""),
    ):
        with pytest.raises(ConfChangeError):
            apply_change(m, bad)
    with pytest.raises(ConfChangeError, match="last voter"):
        apply_change(_m("a"), ConfChange(REMOVE, "a"))
    assert issubclass(ConfChangeError, ProposalDroppedError)


def test_majorities_intersect_matches_enumeration() -> None:
    """quorum/quick_test.go style: the formula against every pair of majorities of small voter sets."""
    universe = "abcdef"
    sets = [frozenset(c) for k in range(1, 6) for c in itertools.combinations(universe, k)]

    def naive(a: frozenset[str], b: frozenset[str]) -> bool:
        qa = [set(q) for k in range(majority(len(a)), len(a) + 1) for q in itertools.combinations(sorted(a), k)]
        qb = [set(q) for k in range(majority(len(b)), len(b) + 1) for q in itertools.combinations(sorted(b), k)]
        return all(x & y for x in qa for y in qb)

    rng = random.Random(1)
    for a, b in [(rng.choice(sets), rng.choice(sets)) for _ in range(400)]:
        assert majorities_intersect(a, b) == naive(a, b), (sorted(a), sorted(b))
    # single-server changes always intersect
    base = frozenset("abcd")
    assert majorities_intersect(base, base - {"d"}) and majorities_intersect(base, base | {"e"})
    assert not majorities_intersect(frozenset("abc"), frozenset("abcde"))  # two changes apart can split


# ---- the leader's refusals ----


def _cluster3(**config: object) -> tuple[Cluster, str]:
    c = Cluster(3, seed=3, **config)  # type: ignore[arg-type]
    SafetyChecker(c)
    lead = c.run_until_leader()
    return c, lead


def test_conf_change_only_at_the_leader() -> None:
    c, lead = _cluster3()
    follower = next(i for i in c.ids if i != lead)
    with pytest.raises(NotLeaderError):
        c.change(follower, ConfChange(ADD, "n9"))


def test_4_1_one_change_in_flight() -> None:
    """Thesis 4.1: a leader starts a change only once the previous CONFIG entry committed."""
    c, lead = _cluster3()
    c.join("n3")
    c.join("n4")
    c.change(lead, ConfChange(ADD, "n3"))
    with pytest.raises(ConfChangeError, match="in flight"):
        c.change(lead, ConfChange(ADD, "n4"))
    c.stabilize()
    c.change(lead, ConfChange(ADD, "n4"))
    c.stabilize()
    assert c.core(lead).membership == _m("n0 n1 n2", "n3 n4")


def test_4_1_no_change_before_the_leader_commits_in_its_term() -> None:
    """Ongaro's raft-dev fix (2015): a new leader changes the configuration only after committing an entry
    (its no-op) in its own term; otherwise two leaders' uncommitted changes could form disjoint majorities."""
    n = Node()
    make_leader(n)  # the no-op is appended but not acknowledged by anybody
    assert not n.core.commit_index
    with pytest.raises(ConfChangeError, match="committed an entry of its term"):
        n.core.propose_conf_change(ConfChange(ADD, "n4"))


def test_no_change_during_a_transfer() -> None:
    c, lead = _cluster3()
    target = next(i for i in c.ids if i != lead)
    c.isolate(target)
    c.core(lead).propose(b"x")
    c.stabilize()
    c.core(lead).transfer_leadership(target)
    with pytest.raises(ConfChangeError, match="transferring"):
        c.change(lead, ConfChange(REMOVE, target))


def test_promote_only_a_caught_up_learner() -> None:
    c, lead = _cluster3(promote_max_lag=5)
    c.add_learner(lead, "n3")
    c.stabilize()
    c.isolate("n3")
    for k in range(10):
        c.propose(lead, b"v%d" % k)
        c.stabilize()
    with pytest.raises(ConfChangeError, match="not caught up"):
        c.change(lead, ConfChange(PROMOTE, "n3"))
    c.heal()
    c.tick(times=2)
    c.stabilize()
    c.change(lead, ConfChange(PROMOTE, "n3"))
    c.stabilize()
    assert c.core(lead).membership == _m("n0 n1 n2 n3")
    assert all(c.core(i).membership == _m("n0 n1 n2 n3") for i in c.ids)


def test_promote_refuses_a_learner_that_is_not_recently_active() -> None:
    c, lead = _cluster3()
    c.add_learner(lead, "n3")
    c.stabilize()
    c.crash("n3")
    c.tick(times=c.core(lead).config.election_tick)  # a check-quorum round clears recent_active
    c.stabilize()
    with pytest.raises(ConfChangeError, match="not caught up"):
        c.change(lead, ConfChange(PROMOTE, "n3"))


# ---- learners ----


def test_learner_gets_the_log_but_counts_in_no_quorum() -> None:
    c, lead = _cluster3()
    c.add_learner(lead, "n3")
    c.stabilize()
    assert [e.data for e in c.nodes["n3"].applied] == [e.data for e in c.nodes[lead].applied]
    others = [i for i in c.initial_ids if i != lead]
    for o in others:  # the leader is left with the learner only: no commit, no check-quorum
        c.cut |= {(lead, o), (o, lead)}
    commit = c.core(lead).commit_index
    c.propose(lead, b"needs a voter")
    c.stabilize()
    assert c.core(lead).commit_index == commit
    assert c.core("n3").last_index == c.core(lead).last_index  # replicated to the learner all the same
    c.tick(lead, times=2 * c.core(lead).config.election_tick)
    c.stabilize()
    assert c.core(lead).role is Role.FOLLOWER  # check-quorum did not count the learner


def test_learner_and_joining_node_never_campaign() -> None:
    c, lead = _cluster3()
    c.join("n3")
    c.join("n4")
    c.add_learner(lead, "n3")
    c.stabilize()
    c.crash(lead)
    terms = {i: c.core(i).current_term for i in ("n3", "n4")}
    for _ in range(100):
        for i in ("n3", "n4"):
            c.tick(i)
            c.process(i)
        assert not [m for m in c.network if isinstance(m, RequestVote) and m.from_id in ("n3", "n4")]
        c.stabilize()
    assert {i: c.core(i).current_term for i in ("n3", "n4")} == terms
    for i in ("n3", "n4"):
        core = c.core(i)
        term = core.current_term
        core.step(TimeoutNow(term=term, from_id=lead, to_id=i, group="default"))
        assert core.role is Role.FOLLOWER and core.current_term == term
        assert core.dropped["not_voter"] == 1


def test_a_node_that_cannot_campaign_leaves_the_leader_lease_after_t_ticks() -> None:
    """A learner (or a removed or joining node) never campaigns, so only hearing from a leader restarts
    its election timer. Were it to restart at every timeout with the leader remembered, a timeout drawn
    equal to T would keep the node "in lease" forever, ignoring every (pre-)vote request."""
    core = RaftCore(
        Config(id="s", peers=("a", "b"), join=True, election_tick=6, heartbeat_tick=2),
        MemoryLog(),
        HardState(),
        random.Random(0),
    )
    core.step(AppendEntries(term=1, from_id="a", to_id="s", group="default"))
    core.randomized_election_timeout = 6  # the draw that never let the lease expire
    for _ in range(5):
        core.tick()
    assert core._in_lease()
    for _ in range(30):
        core.tick()
        assert not core._in_lease() and core.role is Role.FOLLOWER and core.leader_id == "a"


def test_a_leader_that_needs_a_silent_learner_promoted_in_its_log_wins_again() -> None:
    """In {a, b} with
    learner s, the leader a commits "remove b" alone, then appends "promote s" while s is cut off, so its
    quorum is {a, s}; check-quorum deposes it. s, a learner in its own log, never campaigns, and its
    election timer (drawn equal to T) must not restart at each timeout with a remembered as leader, or s
    stays "in lease", drops a's pre-votes forever, and after healing the group never has a leader."""
    c = Cluster(2, seed=1, election_tick=6, heartbeat_tick=2, read_only=ReadOnlyOption.LEASE)
    checker = SafetyChecker(c)
    a = c.run_until_leader()
    b = next(i for i in c.ids if i != a)
    c.add_learner(a, "s")
    c.stabilize()
    c.change(a, ConfChange(REMOVE, b))
    c.stabilize()
    c.isolate("s")
    p = c.change(a, ConfChange(PROMOTE, "s"))
    c.stabilize()
    assert c.core(a).membership == _m(f"{a} s") and c.core("s").membership == _m(a, "s")
    c.core("s").randomized_election_timeout = 6  # the draw that kept s in lease forever
    for _ in range(3 * 6):
        c.tick()
        c.stabilize()
        checker.check()
    assert c.core(a).role is not Role.LEADER  # check-quorum: s is silent
    c.heal()
    for _ in range(10 * 6):
        c.tick()
        c.stabilize()
        checker.check()
        if c.leader() == a and c.core("s").commit_index >= p.last_index:
            break
    assert c.leader() == a and c.core(a).committed_membership == _m(f"{a} s")
    assert c.core("s").committed_membership == _m(f"{a} s") and c.core("s").leader_id == a


def test_joining_node_follows_a_leader_it_does_not_know() -> None:
    """A joining node accepts leader traffic from any sender but never a vote request from a non-member."""
    core = RaftCore(Config(id="new", peers=("a", "b"), join=True), MemoryLog(), HardState(), random.Random(0))
    assert core.membership == _m("a b") and not core.is_voter()
    core.step(RequestVote(term=5, from_id="x", to_id="new", group="default"))
    assert core.dropped["unknown_peer"] == 1 and core.current_term == 0
    core.step(AppendEntries(term=3, from_id="x", to_id="new", group="default"))
    assert core.current_term == 3 and core.leader_id == "x"


def test_config_requires_join_for_a_node_outside_peers() -> None:
    with pytest.raises(ValueError, match="join=True"):
        Config(id="x", peers=("a",))
    with pytest.raises(ValueError, match="must not be one of"):
        Config(id="a", peers=("a",), join=True)


# ---- removal ----


def test_4_2_2_leader_removes_itself_and_steps_down_after_commit() -> None:
    """Thesis 4.2.2: the removed leader replicates the change without counting itself, steps down once it
    commits, and never campaigns again; the others elect a leader among themselves."""
    c, lead = _cluster3()
    p = c.change(lead, ConfChange(REMOVE, lead))
    core = c.core(lead)
    assert core.role.value == "leader" and not core.is_voter()
    c.stabilize()
    assert core.commit_index >= p.last_index
    assert core.role is Role.FOLLOWER
    rest = [i for i in c.ids if i != lead]
    for i in rest:
        assert c.core(i).membership == _m(" ".join(rest))
    new = c.run_until_leader()
    assert new in rest
    c.propose(new, b"after")
    for _ in range(50):
        c.tick()
        c.stabilize()
    assert core.role is Role.FOLLOWER and c.leader() == new
    assert c.core(new).commit_index > core.commit_index  # no longer contacted


def test_removed_leader_does_not_count_itself() -> None:
    c, lead = _cluster3()
    others = [i for i in c.ids if i != lead]
    c.cut.add((lead, others[0]))
    c.cut.add((others[0], lead))
    p = c.change(lead, ConfChange(REMOVE, lead))
    c.stabilize()
    # with itself and one follower it had a majority of the old config, but the new one is {a, b}: both needed
    assert c.core(lead).commit_index < p.last_index and c.core(lead).role is Role.LEADER
    c.heal()
    c.tick(lead)
    c.stabilize()
    assert c.core(lead).commit_index >= p.last_index and c.core(lead).role is Role.FOLLOWER


def test_removed_follower_stops_being_contacted_and_its_votes_are_ignored() -> None:
    c, lead = _cluster3()
    gone = next(i for i in c.ids if i != lead)
    c.change(lead, ConfChange(REMOVE, gone))
    c.stabilize()
    assert gone not in c.core(lead).progress
    sent = c.stats["sent"]
    c.tick(lead, times=5)
    c.process(lead)
    assert all(m.to_id != gone for m in c.network) and c.stats["sent"] > sent
    c.stabilize()
    # its last heartbeat told it the removal committed: it will never campaign
    assert not c.core(gone).committed_membership.is_voter(gone) and not c.core(gone).is_voter()
    for _ in range(50):
        c.tick()
        c.stabilize()
    assert c.core(gone).role is Role.FOLLOWER
    dropped = c.core(lead).dropped["unknown_peer"]
    c.core(lead).step(RequestVote(term=99, from_id=gone, to_id=lead, group="default"))
    assert c.core(lead).dropped["unknown_peer"] == dropped + 1 and c.core(lead).current_term < 99


# ---- the configuration in effect ----


def test_4_1_config_takes_effect_when_appended_and_rolls_back_on_truncation() -> None:
    n = Node(terms=[1], hard_state=HardState(1, None, 1))
    new = _m("n1 n2 n3", "n4")
    n.core.step(
        AppendEntries(
            term=1,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=1,
            prev_log_term=1,
            leader_commit=1,
            entries=(_conf_entry(2, 1, new),),
        )
    )
    n.drain()
    assert n.core.membership == new  # not committed, but in effect
    assert n.core.hard_state.config == b"" and n.core.committed_membership == _m("n1 n2 n3")
    n.core.step(
        AppendEntries(
            term=2,
            from_id="n3",
            to_id="n1",
            group="default",
            prev_log_index=1,
            prev_log_term=1,
            leader_commit=1,
            entries=(Entry(2, 2, b"x"),),
        )
    )
    n.drain()
    assert n.core.membership == _m("n1 n2 n3")  # the entry that set it is gone
    assert n.core.dropped["unknown_peer"] == 0


def test_hard_state_config_changes_when_the_config_entry_commits() -> None:
    n = Node(terms=[1], hard_state=HardState(1, None, 1))
    new = _m("n1 n2 n3", "n4")
    base = {"term": 1, "from_id": "n2", "to_id": "n1", "group": "default", "prev_log_index": 1, "prev_log_term": 1}
    n.core.step(AppendEntries(**base, leader_commit=1, entries=(_conf_entry(2, 1, new),)))  # type: ignore[arg-type]
    n.drain()
    assert n.store.load().config == b""
    n.core.step(
        AppendEntries(
            term=1, from_id="n2", to_id="n1", group="default", prev_log_index=2, prev_log_term=1, leader_commit=2
        )
    )
    n.drain()
    assert n.store.load().config == new.encode() and n.core.committed_membership == new


class _CountingLog(MemoryLog):
    __slots__ = ("lowest_read",)

    def __init__(self, entries: list[Entry]) -> None:
        super().__init__(entries)
        self.lowest_read = 1 << 62

    def read(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        self.lowest_read = min(self.lowest_read, lo)
        return super().read(lo, hi, max_bytes)


def test_restart_takes_the_config_from_hard_state_and_scans_only_above_commit() -> None:
    committed = _m("n1 n2 n3", "n4")
    pending = _m("n1 n2 n3 n4")
    entries = [Entry(i, 1, b"x") for i in range(1, 1001)]
    entries[9] = _conf_entry(10, 1, committed)
    entries += [_conf_entry(1001, 1, pending), Entry(1002, 1, b"y")]
    log = _CountingLog(entries)
    core = RaftCore(
        Config(id="n1", peers=("n1", "n2", "n3")),
        log,
        HardState(1, None, 1000, committed.encode()),
        random.Random(0),
    )
    assert log.lowest_read == 1001
    assert core.membership == pending and core.committed_membership == committed
    assert core.hard_state.config == committed.encode()


# ---- a whole group changes ----


def test_replace_every_original_member() -> None:
    """Add three learners, promote them, remove the three original voters (the leader last): the group
    keeps committing and the SafetyChecker holds at every step."""
    c = Cluster(3, seed=11)
    checker = SafetyChecker(c)

    def settle() -> str:
        for _ in range(30):
            c.tick()
            c.stabilize()
            checker.check()
        return c.run_until_leader()

    lead = settle()
    for new in ("m0", "m1", "m2"):
        c.add_learner(lead, new)
        lead = settle()
        c.change(lead, ConfChange(PROMOTE, new))
        lead = settle()
        c.propose(lead, new.encode())
    for old in ("n0", "n1", "n2"):
        lead = settle()
        c.change(lead, ConfChange(REMOVE, old))
        lead = settle()
    lead = settle()
    assert lead in ("m0", "m1", "m2")
    assert c.core(lead).membership == _m("m0 m1 m2")
    p = c.propose(lead, b"end")
    c.stabilize()
    assert c.core(lead).commit_index >= p.last_index
    for i in ("n0", "n1", "n2"):
        assert c.core(i).role is Role.FOLLOWER
    checker.check()


def test_a_leader_deposed_while_removing_itself_can_still_finish_the_change() -> None:
    """In {a, b} the leader a appends "remove a" and loses leadership before b
    gets it. b (config {a, b}) needs a's vote, which a refuses (its log is longer); so a, whose removal
    is not committed, may still campaign (counting the voters of its newest config, {b}), wins, commits
    the change and steps down; then b leads alone."""
    c, lead = _cluster3()
    third = next(i for i in c.ids if i != lead)
    c.change(lead, ConfChange(REMOVE, third))
    c.stabilize()
    other = next(i for i in c.ids if i not in (lead, third))
    c.isolate(lead)
    p = c.change(lead, ConfChange(REMOVE, lead))
    c.tick(lead, times=2 * c.core(lead).config.election_tick)  # check-quorum deposes it
    c.stabilize()
    assert c.core(lead).role is not Role.LEADER and c.core(other).last_index < p.last_index
    c.heal()
    for _ in range(200):
        c.tick()
        c.stabilize()
        if c.leader() == other and c.core(other).membership == _m(other):
            break
    assert c.leader() == other and c.core(other).membership == _m(other)
    q = c.propose(other, b"alone")
    c.stabilize()
    assert c.core(other).commit_index >= q.last_index


def test_two_current_configs_may_have_disjoint_majorities_yet_nothing_breaks() -> None:
    """Why the SafetyChecker checks configurations against the latest *committed* one, not pairwise: a
    deposed leader that still believes it leads keeps its uncommitted "remove n3" ({n0, n1, n2}) while the
    others commit "promote e" ({n0, n1, n2, n3, e}); {n0, n1} and {n2, n3, e} are disjoint majorities of the
    two current configurations. The stale leader can commit nothing: the voters it needs saw a newer term."""
    c = Cluster(4, seed=1, check_quorum=False)
    checker = SafetyChecker(c)
    c.elect("n0")
    c.add_learner("n0", "e")
    c.stabilize()
    c.isolate("n0")
    c.change("n0", ConfChange(REMOVE, "n3"))
    c.stabilize()
    c.core("n1").step(TimeoutNow(term=1, from_id="n0", to_id="n1", group="default"))  # as if sent before
    c.stabilize()
    c.tick("n1", times=2)
    c.stabilize()
    c.change("n1", ConfChange(PROMOTE, "e"))
    c.stabilize()
    checker.check()
    stale, new = c.core("n0"), c.core("n1")
    assert stale.role is Role.LEADER and new.role is Role.LEADER
    assert stale.membership == _m("n0 n1 n2", "e") and new.membership == _m("n0 n1 n2 n3 e")
    assert not majorities_intersect(stale.membership.voters, new.membership.voters)
    c.heal()
    commit = stale.commit_index
    stale.propose(b"lost")
    c.tick("n0")
    c.stabilize()
    checker.check()
    assert stale.role.value == "follower" and stale.commit_index >= commit
    assert b"lost" not in [e.data for e in c.nodes["n1"].applied]


def test_a_joining_node_never_votes_until_a_configuration_names_it() -> None:
    """jepsen_like (compaction + membership): n2 was removed, wiped and restarted with --join to be re-added;
    n1, restarted with a stale log whose configuration still listed n2 as a voter, asked it for votes, the
    empty log granted them, and n1 won a term with 2 of {n0, n1, n2} and overwrote committed entries. A
    joining node that no configuration names must refuse (pre-)votes; once added it answers as usual."""
    log, store = MemoryLog(), MemoryHardStateStore()
    core = RaftCore(Config(id="n2", peers=("n0", "n1"), join=True), log, HardState(), random.Random(0))

    def drain() -> list[RequestVoteResponse]:
        rd = core.ready()
        persist_ready(rd, log, store)
        core.advance(rd)
        return [m for m in (*rd.messages, *rd.persisted_messages) if isinstance(m, RequestVoteResponse)]

    for pre_vote in (True, False):
        core.step(RequestVote(term=4, from_id="n1", to_id="n2", group="default", pre_vote=pre_vote,
                              last_log_index=633, last_log_term=1))  # fmt: skip
    assert not core.has_ready() or not drain()
    assert core.dropped["not_member"] == 2 and core.voted_for is None and core.current_term == 0
    # the leader adds it as a learner: from then on it answers votes by the usual rules
    added = Membership({"n0": "", "n1": ""}, {"n2": ""}).encode()
    core.step(AppendEntries(term=5, from_id="n0", to_id="n2", group="default",
                            entries=(Entry(1, 5, added, EntryKind.CONFIG),), leader_commit=1))  # fmt: skip
    drain()
    assert core.membership.is_learner("n2")
    for _ in range(2 * core.config.election_tick):  # past the leader's lease
        core.tick()
    if core.has_ready():
        drain()
    core.step(RequestVote(term=6, from_id="n1", to_id="n2", group="default", last_log_index=1, last_log_term=5))
    granted = drain()
    assert granted and granted[0].vote_granted


def _stale_leader_meets_wiped_node(floor: bool) -> tuple[Cluster, SafetyChecker, str]:
    """n0 leads term 1 of {n0..n3} and, cut off, appends "remove n3" (its configuration: {n0, n1, n2}, a
    majority is 2); the others elect a leader in term 2, which removes a follower x of {n1, n2} (committed
    by the other two); x is wiped and restarts as a joining node; then only the link n0 <-> x comes back."""
    c = Cluster(4, seed=7, election_tick=6, heartbeat_tick=2, check_quorum=False)
    checker = SafetyChecker(c)
    c.elect("n0")
    c.isolate("n0")
    c.change("n0", ConfChange(ConfChangeOp.REMOVE, "n3"))
    c.stabilize()
    for _ in range(100):
        if c.leader() != "n0":
            break
        for i in ("n1", "n2", "n3"):
            c.tick(i)
        c.stabilize()
    lead = c.leader()
    assert lead is not None and lead != "n0" and c.core(lead).current_term == 2
    x = next(i for i in ("n1", "n2") if i != lead)
    c.change(lead, ConfChange(ConfChangeOp.REMOVE, x))
    c.stabilize()
    checker.check()
    assert x not in checker.committed_config[1].members
    c.crash(x)
    c.wipe(x, term=c.core(lead).current_term if floor else 0)
    c.cut -= {("n0", x), (x, "n0")}
    for _ in range(6):
        c.tick("n0")
        c.stabilize()
        checker.check()
    return c, checker, x


def test_a_wiped_node_starts_at_the_groups_term_so_a_stale_leader_cannot_count_it() -> None:
    """The simulation's lost-disk replacement (raft5, long run) found it: a stale leader whose configuration
    still lists a wiped node as a voter won that node's acknowledgement (an empty store takes any leader's
    term) and committed over entries the group had committed. Votes were already refused (above); the
    term floor the runtime learns before starting a joining node (`dledger.node.join_term`) makes the
    wiped node reject the stale leader's term, so the stale leader learns of the new term and steps down."""
    with pytest.raises(AssertionError, match=r"committed a different entry|state machine safety"):
        _stale_leader_meets_wiped_node(floor=False)  # the hazard, as the simulation found it
    c, _checker, x = _stale_leader_meets_wiped_node(floor=True)
    assert c.core("n0").role is not Role.LEADER and c.core("n0").current_term >= 2
    assert c.core(x).log.last_index() == 0  # it took nothing from the stale leader
