"""Snapshots (thesis chapter 5, paper §7): the leader sends one when entries are compacted, a follower
installs it through `Ready.snapshot`, and Progress waits in SNAPSHOT until the runtime reports."""

from __future__ import annotations

import random

import pytest

from dledger.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Config,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    ProgressState,
    RaftCore,
    Role,
    persist_ready,
)
from dledger.storage_api import Entry, HardState, SnapshotMeta
from dledger.testing import Cluster, MemoryHardStateStore, MemoryLog, SafetyChecker
from tests.raft.helpers import Node, make_leader, of_type

CONF = Membership({"n1": "", "n2": "", "n3": ""}, {"n4": "h:4"})


def _install(term: int = 2, index: int = 10, last_term: int = 2, config: bytes = CONF.encode()) -> InstallSnapshot:
    return InstallSnapshot(
        term=term,
        from_id="n2",
        to_id="n1",
        group="default",
        last_included_index=index,
        last_included_term=last_term,
        config=config,
    )


# ---- follower ----


def test_7_follower_replaces_its_log_by_the_snapshot() -> None:
    n = Node(terms=[1, 1, 1], hard_state=HardState(1, None, 2))
    n.core.step(_install())
    assert n.core.commit_index == 10 and n.core.membership == CONF
    rd = n.core.ready()
    assert rd.snapshot == SnapshotMeta(10, 2, CONF.encode())
    assert rd.committed_entries == [] and rd.messages == []
    (resp,) = rd.persisted_messages
    assert isinstance(resp, InstallSnapshotResponse) and resp.success and resp.last_index == 10
    assert rd.hard_state == HardState(2, None, 10, CONF.encode())
    persist_ready(rd, n.log, n.store)
    assert (n.log.first_index, n.log.last_index, n.log.term_at(10)) == (11, 10, 2)
    n.core.advance(rd)
    assert n.core.applied == n.core.commit_index == 10 and n.core.snapshot == rd.snapshot
    assert not n.core.has_ready()
    # the log continues after the snapshot
    n.core.step(
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=10,
            prev_log_term=2,
            leader_commit=11,
            entries=(Entry(11, 2, b"x"),),
        )
    )
    msgs = n.drain()
    (ok,) = msgs
    assert isinstance(ok, AppendEntriesResponse) and ok.success and ok.match_index == 11
    assert n.core.applied == 11


def test_entries_arriving_before_the_snapshot_is_installed_go_in_the_same_ready() -> None:
    n = Node(terms=[1], hard_state=HardState(1, None, 1))
    n.core.step(_install())
    n.core.step(
        AppendEntries(
            term=2,
            from_id="n2",
            to_id="n1",
            group="default",
            prev_log_index=10,
            prev_log_term=2,
            leader_commit=11,
            entries=(Entry(11, 2, b"x"),),
        )
    )
    rd = n.core.ready()
    assert rd.snapshot is not None and [e.index for e in rd.entries] == [11]
    assert rd.committed_entries == []  # nothing is applied before the snapshot is installed
    persist_ready(rd, n.log, n.store)
    n.core.advance(rd)
    assert n.log.last_index == 11
    rd = n.core.ready()
    assert [e.index for e in rd.committed_entries] == [11]


def test_7_snapshot_at_or_below_the_commit_index_changes_nothing() -> None:
    n = Node(terms=[1, 1, 2, 2], hard_state=HardState(2, None, 4))
    n.core.step(_install(index=3, last_term=2))
    msgs = n.drain()
    (resp,) = of_type(msgs, InstallSnapshotResponse)
    assert resp.success and resp.last_index == 4
    assert n.last_ready is not None and n.last_ready.snapshot is None and n.log.first_index == 1


def test_7_snapshot_whose_last_entry_we_hold_keeps_the_log() -> None:
    """Figure 5.3 step 6: retain the entries following the snapshot's last entry; here the state machine
    simply applies the entries it already holds, no restore."""
    n = Node(terms=[1, 1, 2, 2, 2], hard_state=HardState(2, None, 1))
    n.core.step(_install(index=3, last_term=2, config=b""))
    rd = n.core.ready()
    assert rd.snapshot is None and [e.index for e in rd.committed_entries] == [1, 2, 3]
    (resp,) = rd.persisted_messages
    assert isinstance(resp, InstallSnapshotResponse) and resp.last_index == 3
    persist_ready(rd, n.log, n.store)
    n.core.advance(rd)
    assert n.log.last_index == 5 and n.core.commit_index == 3


def test_7_stale_snapshot_is_rejected() -> None:
    n = Node(terms=[1], hard_state=HardState(3, None, 1))
    n.core.step(_install(term=2))
    (resp,) = n.drain()
    assert isinstance(resp, InstallSnapshotResponse) and not resp.success and resp.term == 3
    assert n.core.commit_index == 1


def test_candidate_installs_a_snapshot_from_the_leader_of_its_term() -> None:
    n = Node(terms=[1], hard_state=HardState(1, None, 1), pre_vote=False)
    for _ in range(30):
        n.core.tick()
    assert n.core.role.value == "candidate"
    n.core.step(_install(term=n.core.current_term, last_term=1))
    assert n.core.role is Role.FOLLOWER and n.core.leader_id == "n2" and n.core.commit_index == 10


def test_restart_in_the_crash_window_takes_the_config_from_the_snapshot() -> None:
    """A crash after `log.reset` but before the hard state was saved: the log starts after the snapshot,
    the hard state is older. The driver reports its snapshot at start; the configuration is the snapshot's."""
    log = MemoryLog()
    log.reset(10, 2)
    store = MemoryHardStateStore(HardState(1, None, 2))
    cfg = Config(id="n1", peers=("n1", "n2", "n3"), applied=10)
    core = RaftCore(cfg, log, store.load(), random.Random(0))
    core.set_snapshot(SnapshotMeta(10, 2, CONF.encode()))
    assert core.commit_index == 10 and core.membership == CONF
    assert core.hard_state.config == CONF.encode()


def test_set_snapshot_past_the_commit_index_is_refused() -> None:
    n = Node(terms=[1, 1], hard_state=HardState(1, None, 1))
    with pytest.raises(ValueError, match="past the commit index"):
        n.core.set_snapshot(SnapshotMeta(2, 1))
    with pytest.raises(ValueError):
        n.core.set_snapshot(SnapshotMeta(1, 1, b"nope"))


# ---- leader ----


def _lagging(seed: int = 5) -> tuple[Cluster, SafetyChecker, str, str]:
    c = Cluster(3, seed=seed)
    checker = SafetyChecker(c)
    lead = c.run_until_leader()
    lag = next(i for i in c.ids if i != lead)
    c.isolate(lag)
    for k in range(10):
        c.propose(lead, b"v%d" % k)
        c.stabilize()
    c.compact(lead)
    checker.check()
    return c, checker, lead, lag


def _heartbeat_round(c: Cluster, lead: str, lag: str) -> None:
    """The leader heartbeats, `lag` answers (its log ends far behind): the leader now wants to send."""
    c.tick(lead, times=c.core(lead).config.heartbeat_tick)
    c.persist(lead)
    c.process(lead)
    c.persist(lead)
    c.network = [m for m in c.network if m.to_id == lag]
    c.deliver_all()
    c.handle_ready(lag)
    c.deliver_all()
    c.persist(lead)


def test_7_leader_sends_a_snapshot_when_the_entries_are_compacted() -> None:
    c, checker, lead, lag = _lagging()
    c.heal()
    for _ in range(5):
        c.tick()
        c.stabilize()
        checker.check()
    assert c.stats["snapshots_sent"] == 1 and c.stats["snapshots_installed"] == 1
    assert c.nodes[lag].applied == c.nodes[lead].applied
    snap = c.nodes[lead].snapshot
    assert snap is not None and c.nodes[lag].log.first_index == snap.index + 1
    pr = c.core(lead).progress[lag]
    assert pr.state is ProgressState.REPLICATE and pr.match_index == c.core(lead).last_index
    c.propose(lead, b"after")
    c.stabilize()
    checker.check()
    assert c.nodes[lag].applied == c.nodes[lead].applied


def test_snapshot_state_waits_then_a_failed_snapshot_is_retried() -> None:
    c, checker, lead, lag = _lagging()
    core = c.core(lead)
    c.heal()
    _heartbeat_round(c, lead, lag)
    c.cut.add((lead, lag))  # the stream fails: the harness reports failure
    assert c.process(lead)
    assert c.stats["snapshots_sent"] == 1 and c.stats["snapshots_installed"] == 0
    pr = core.progress[lag]
    assert pr.state is ProgressState.PROBE and pr.probe_sent  # paused until a heartbeat answer
    c.heal()
    for _ in range(5):
        c.tick()
        c.stabilize()
    assert c.stats["snapshots_installed"] == 1 and c.nodes[lag].applied == c.nodes[lead].applied
    checker.check()


def test_report_snapshot_success_waits_for_the_answer_then_replicates() -> None:
    c, _checker, lead, lag = _lagging()
    core = c.core(lead)
    c.heal()
    _heartbeat_round(c, lead, lag)
    assert c.process(lead)
    (snap_msg,) = of_type(c.network, InstallSnapshot)
    pr = core.progress[lag]
    assert pr.state.value == "probe" and pr.probe_sent  # reported success, waiting for the answer
    assert pr.next_index == snap_msg.last_included_index + 1
    c.stabilize()
    assert pr.state is ProgressState.REPLICATE and pr.match_index == core.last_index


def test_snapshot_state_sends_nothing_until_resolved() -> None:
    n = Node(terms=[1] * 5, hard_state=HardState(1, None, 5), applied=5)
    n.log.compact_before(5)
    n.core.set_snapshot(SnapshotMeta(4, 1))
    core = n.core
    make_leader(n)
    core.step(
        AppendEntriesResponse(
            term=core.current_term, from_id="n2", to_id="n1", group="default", reject_index=5, last_log_index=0
        )
    )
    msgs = n.drain()
    (snap,) = of_type(msgs, InstallSnapshot)
    assert (snap.last_included_index, snap.last_included_term) == (4, 1)
    assert core.progress["n2"].state is ProgressState.SNAPSHOT
    core.propose(b"more")
    assert not [m for m in n.drain() if m.to_id == "n2" and isinstance(m, AppendEntries) and m.entries]
    core.report_snapshot("n2", False)
    pr = core.progress["n2"]
    assert pr.state is ProgressState.PROBE and pr.next_index == pr.match_index + 1


def test_no_snapshot_reported_means_no_snapshot_sent() -> None:
    n = Node(terms=[1] * 5, hard_state=HardState(1, None, 5), applied=5)
    n.log.compact_before(5)
    make_leader(n)
    n.core.step(
        AppendEntriesResponse(term=n.core.current_term, from_id="n2", to_id="n1", group="default", reject_index=5)
    )
    assert not of_type(n.drain(), InstallSnapshot)
    assert n.core.dropped["no_snapshot"] >= 1


def test_joining_learner_catches_up_through_a_snapshot_carrying_the_config() -> None:
    c = Cluster(3, seed=2)
    checker = SafetyChecker(c)
    lead = c.run_until_leader()
    c.add_learner(lead, "n3")
    c.crash("n3")
    for k in range(5):
        c.propose(lead, b"v%d" % k)
        c.stabilize()
    c.compact(lead)
    c.restart("n3")
    for _ in range(5):
        c.tick()
        c.stabilize()
        checker.check()
    assert c.stats["snapshots_installed"] == 1
    assert c.core("n3").membership.is_learner("n3")
    assert c.nodes["n3"].applied == c.nodes[lead].applied
    c.change(lead, ConfChange(ConfChangeOp.PROMOTE, "n3"))
    c.stabilize()
    assert c.core("n3").is_voter()
    checker.check()


def test_committed_entries_never_go_below_an_installed_snapshot() -> None:
    """Entries 1..3 are committed but not yet applied when a snapshot at 8 arrives: they are never handed
    out; the state machine jumps to 8 by the restore."""
    n = Node(terms=[1, 1, 1], hard_state=HardState(1, None, 3))
    n.core.step(_install(index=8, last_term=1))
    seen: list[int] = []
    while n.core.has_ready():
        rd = n.core.ready()
        seen += [e.index for e in rd.committed_entries]
        persist_ready(rd, n.log, n.store)
        n.core.advance(rd)
    assert seen == [] and n.core.applied == 8
