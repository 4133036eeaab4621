"""Randomized simulation: a hypothesis RuleBasedStateMachine over the Cluster harness (3 and 5 nodes).

Rules: ticks, Ready processing and persisting, deliveries in any order, drops, duplicates, partitions,
crashes, restarts, damaged logs (a replica's durable log loses its tail and it restarts recovering: see
`Cluster.damage`), proposals, reads, leadership transfers, membership changes (add a learner, a brand-new
node that joins; promote it; remove any member, the leader included; re-add a removed node under its old
id with its store wiped, as an operator replaces a lost disk) and snapshots (a node compacts its log behind
a snapshot; lagging followers then install the leader's). After every step `SafetyChecker.check()`
asserts the safety properties (see dledger/testing/invariants.py, membership agreement included); the
teardown heals everything and asserts that a leader emerges and every acknowledged proposal is applied on
every member of its configuration.

Three sizes of run, all derandomized but the last (reproducible, no example database):
- `test_simulation_quick`, a few examples per machine, in the fast set (`pytest -m "not process"`);
- `test_simulation`, the sweep (DLEDGER_SIM_EXAMPLES, 300 by default, per 3-node machine; half for 5
  nodes), marked `sweep`: a plain `pytest`, as CI runs it, includes it, an `-m` expression only when it
  names it (`pytest -m sweep`);
- `test_simulation_long`, x100 with a random seed, marked `slow` (`pytest -m slow`).
Failures print the minimal rule sequence, the harness seed and a `@reproduce_failure` blob.

Derandomized is not enough for a replay: Hypothesis (>= 6.131) also draws, now and then, constants it
finds in the source of every local module imported so far, so the examples depended on which modules the
process had loaded (the whole suite collected, or tests of other packages run before in an xdist worker)
and on any edit to them. `_fixed_constants` turns that pool off while the simulation runs, so its examples
depend only on this file and the Hypothesis version.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dledger.raft import (
    ConfChange,
    ConfChangeOp,
    NotLeaderError,
    ProposalDroppedError,
    RaftCore,
    ReadOnlyOption,
    Role,
)
from dledger.testing import Cluster
from dledger.testing.invariants import SafetyChecker

CI_EXAMPLES = int(os.environ.get("DLEDGER_SIM_EXAMPLES", "300"))
QUICK_EXAMPLES = 10
STEPS = 80
STEP_COUNTER: dict[str, int] = {}
OUTCOMES: dict[str, int] = {}  # what the runs reached: acked proposals, answered reads, terms, crashes


class RaftMachine(RuleBasedStateMachine):
    """3 nodes; one entry per AppendEntries and at most 3 in flight, so pipelining and flow control matter."""

    N: ClassVar[int] = 3
    CONFIG: ClassVar[dict[str, object]] = {"max_append_bytes": 1, "max_inflight_msgs": 3, "lazy_commit": True}
    NAME: ClassVar[str] = "raft3"

    def __init__(self) -> None:
        super().__init__()
        self.cluster: Cluster | None = None
        self.checker: SafetyChecker | None = None
        self.serial = 0
        self.to_wipe: set[str] = set()  # stopped nodes to wipe once their re-addition commits

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def _count(self) -> None:
        STEP_COUNTER[self.NAME] = STEP_COUNTER.get(self.NAME, 0) + 1

    def _node(self, k: int) -> str:
        return self.c.ids[k % len(self.c.ids)]

    def _core(self, k: int) -> RaftCore | None:
        return self.c.nodes[self._node(k)].core

    @initialize(seed=st.integers(0, 2**32 - 1), warm=st.booleans())
    def setup(self, seed: int, warm: bool) -> None:
        self.cluster = Cluster(self.N, seed=seed, election_tick=6, heartbeat_tick=2, **self.CONFIG)  # type: ignore[arg-type]
        self.checker = SafetyChecker(self.cluster)
        print(f"harness seed: {seed}")
        if warm:  # start half of the runs from an elected leader, so they go deeper
            self.cluster.run_until_leader()
            self.checker.check()

    @rule(times=st.integers(1, 4))
    def tick(self, times: int) -> None:
        self._count()
        self.c.tick(times=times)

    @rule(times=st.integers(1, 3), rounds=st.integers(1, 30))
    def tick_and_run(self, times: int, rounds: int) -> None:
        self._count()
        self.c.tick(times=times)
        self.c.run(rounds)

    @rule(rounds=st.integers(0, 4))
    def elapse(self, rounds: int) -> None:
        """An election timeout's worth of ticks, with some message passing in between."""
        self._count()
        for _ in range(6):
            self.c.tick()
            self.c.run(rounds)

    @rule(rounds=st.integers(1, 20))
    def run(self, rounds: int) -> None:
        self._count()
        self.c.run(rounds)

    @rule(kind=st.sampled_from(["process", "persist", "handle_ready"]), k=st.integers(0, 4))
    def node_io(self, kind: str, k: int) -> None:
        self._count()
        node = self._node(k)
        if kind == "process":
            self.c.process(node)
        elif kind == "persist":
            self.c.persist(node)
        else:
            self.c.handle_ready(node)

    @rule(
        kind=st.sampled_from(["deliver", "deliver", "drop", "duplicate", "deliver_all"]),
        k=st.integers(0, 1000),
        n=st.integers(1, 8),
    )
    def network(self, kind: str, k: int, n: int) -> None:
        self._count()
        c = self.c
        for j in range(n):
            if kind == "deliver":
                c.deliver(k + j)
            elif kind == "drop":
                c.drop(k + j)
            elif kind == "duplicate":
                c.duplicate(k + j)
            else:
                c.deliver_all()

    @rule(
        kind=st.sampled_from(
            ["partition", "heal", "crash", "restart", "isolate_leader", "crash_leader", "leader_in_minority"]
        ),
        k=st.integers(0, 4),
        members=st.sets(st.integers(0, 4), max_size=3),
    )
    def fault(self, kind: str, k: int, members: set[int]) -> None:
        self._count()
        c = self.c
        lead = c.leader()
        if kind == "isolate_leader" and lead is not None:
            c.isolate(lead)
        elif kind == "leader_in_minority" and lead is not None:
            # the leader keeps a minority of followers: it may go on believing it leads
            others = [i for i in c.ids if i != lead]
            minority = [lead, *others[k % len(others) :][: self.N // 2 - 1]]
            c.heal()
            c.partition(minority, [i for i in c.ids if i not in minority])
        elif kind == "crash_leader" and lead is not None:
            c.crash(lead)
        elif kind == "partition":
            group = {self._node(j) for j in members}
            c.heal()
            c.partition(group, [i for i in c.ids if i not in group])
        elif kind == "heal":
            c.heal()
        elif kind == "crash":
            if self._core(k) is not None:
                c.crash(self._node(k))
        else:
            c.restart(self._node(k))

    @rule(k=st.integers(0, 4))
    def depose_leader(self, k: int) -> None:
        """A macro step to a deep state: cut the leader into a minority and let the majority elect and
        commit under a new leader, while the old one may still believe it leads."""
        self._count()
        c = self.c
        lead = c.leader()
        if lead is None:
            return
        self.fault("leader_in_minority", k, set())
        for _ in range(4 * 6):
            c.tick()
            c.run(30)
        self._propose(self._any_leader(k + 1), 1)
        c.run(30)

    def _propose(self, core: RaftCore | None, n: int) -> None:
        if core is None:
            return
        datas = []
        for _ in range(n):
            self.serial += 1
            datas.append(b"v%d" % self.serial)
        try:
            p = core.propose_batch(datas)
        except (NotLeaderError, ProposalDroppedError):
            return
        assert self.checker is not None
        for j, data in enumerate(datas):
            self.checker.record_proposal(core.id, p.first_index + j, p.term, data)

    @rule(k=st.integers(0, 4), n=st.integers(1, 3))
    def propose(self, k: int, n: int) -> None:
        self._count()
        self._propose(self._core(k), n)

    def _any_leader(self, k: int) -> RaftCore | None:
        """The k-th node that believes it leads (stale leaders of older terms included)."""
        leaders = [n.core for n in self.c.nodes.values() if n.core is not None and n.core.role is Role.LEADER]
        return leaders[k % len(leaders)] if leaders else None

    @rule(k=st.integers(0, 4), n=st.integers(1, 3))
    def propose_at_leader(self, k: int, n: int) -> None:
        self._count()
        self._propose(self._any_leader(k), n)

    def _read(self, core: RaftCore | None) -> None:
        if core is None:
            return
        self.serial += 1
        ctx = b"r%d" % self.serial
        assert self.checker is not None
        self.checker.record_read(core.id, ctx)
        try:
            core.read_index(ctx)
        except NotLeaderError:
            self.checker.reads.pop((core.id, ctx))

    @rule(k=st.integers(0, 4))
    def read(self, k: int) -> None:
        self._count()
        self._read(self._core(k))

    @rule(k=st.integers(0, 4))
    def read_at_leader(self, k: int) -> None:
        self._count()
        self._read(self._any_leader(k))

    @precondition(lambda self: self.cluster is not None and self.c.leader() is not None)
    @rule(to=st.integers(0, 4))
    def transfer(self, to: int) -> None:
        self._count()
        lead = self.c.leader()
        assert lead is not None
        try:
            self.c.core(lead).transfer_leadership(self._node(to))
        except ValueError:
            pass  # not a voter (any more)

    # ---- membership and snapshots ----

    SPARES: ClassVar[tuple[str, ...]] = ("s0", "s1", "s2")

    def _change(self, k: int, change: ConfChange) -> None:
        core = self._any_leader(k)
        if core is None:
            return
        try:
            if change.node_id not in self.c.nodes:
                self.c.join(change.node_id)
            core.propose_conf_change(change)
        except (NotLeaderError, ProposalDroppedError):
            return
        OUTCOMES["conf_changes"] = OUTCOMES.get("conf_changes", 0) + 1

    @rule(k=st.integers(0, 4))
    def add_learner(self, k: int) -> None:
        """A brand-new node joins (removed nodes are never re-added, as in etcd: ids are not reused)."""
        self._count()
        fresh = [i for i in self.SPARES if i not in self.c.nodes]
        if fresh:
            self._change(k, ConfChange(ConfChangeOp.ADD_LEARNER, fresh[0]))

    @rule(k=st.integers(0, 4), j=st.integers(0, 4))
    def promote(self, k: int, j: int) -> None:
        self._count()
        core = self._any_leader(k)
        learners = sorted(core.membership.learners) if core is not None else []
        if learners:
            self._change(k, ConfChange(ConfChangeOp.PROMOTE, learners[j % len(learners)]))

    @rule(k=st.integers(0, 4), j=st.integers(0, 6), itself=st.booleans())
    def remove(self, k: int, j: int, itself: bool) -> None:
        self._count()
        core = self._any_leader(k)
        if core is None:
            return
        members = sorted(core.membership.members)
        self._change(k, ConfChange(ConfChangeOp.REMOVE, core.id if itself else members[j % len(members)]))

    @rule(k=st.integers(0, 4), j=st.integers(0, 6))
    def readd_removed(self, k: int, j: int) -> None:
        """The operator's replacement of a lost disk (docs/operating.md; jepsen_like's replace-wiped), first
        half: a node whose removal is committed is stopped and added again, as a learner, under its old id.
        Its store is wiped only once that addition commits (`wipe_readded`)."""
        self._count()
        if any(n.recovering_until for n in self.c.nodes.values()):
            return  # one damaged store at a time (see damage_log)
        core = self._any_leader(k)
        assert self.checker is not None
        if core is None:
            return
        committed = self.checker.committed_config[1]
        removed = [i for i in self.c.ids if i not in committed.members and i not in core.membership.members]
        if not removed:
            return
        node = removed[j % len(removed)]
        if self.c.nodes[node].alive:
            self.c.crash(node)
        self.to_wipe.add(node)
        self._change(k, ConfChange(ConfChangeOp.ADD_LEARNER, node))

    @rule(j=st.integers(0, 6))
    def wipe_readded(self, j: int) -> None:
        """Second half: a stopped node whose re-addition has committed loses its store and starts as a
        joining node with an empty one (it must not vote until a configuration in its new log names it)."""
        self._count()
        assert self.checker is not None
        committed = self.checker.committed_config[1]
        ready = sorted(i for i in self.to_wipe if i in committed.members and not self.c.nodes[i].alive)
        if ready:
            self._wipe(ready[j % len(ready)])

    def _wipe(self, node: str) -> None:
        self.to_wipe.discard(node)
        self.c.wipe(node, self._term_floor())

    def _term_floor(self) -> int:
        """The term a wiped node starts at: what the runtime learns from a read the leader confirmed after
        the node's removal committed (`dledger.node.join_term`). Modelled by its lowest honest value, the
        term in which the latest committed configuration (the removal, or a later one) was first seen."""
        assert self.checker is not None
        ci = self.checker.committed_config[0]
        return self.checker.committed_seen_in[ci - 1] if ci else 0

    def _settle(self, done: Callable[[], bool]) -> bool:
        """Tick and pass messages (at most 4 election timeouts) until `done()`, checking safety as it goes."""
        assert self.checker is not None
        for _ in range(4 * 6):
            if done():
                return True
            self.c.tick()
            self.c.run(30)
            self.checker.check()
        return done()

    def _change_at_leader(self, change: ConfChange) -> bool:
        """Propose `change` at the current leader, waiting for one (at most 3 tries as leaders change)."""
        c = self.c
        for _ in range(3):
            self._settle(lambda: c.leader() is not None)
            lead = c.leader()
            if lead is not None:
                try:
                    c.change(lead, change)
                    return True
                except (NotLeaderError, ProposalDroppedError):
                    pass
            c.tick()
            c.run(30)
        return False

    @rule(j=st.integers(0, 6), leader_first=st.booleans(), wipe_first=st.booleans())
    def replace_lost_disk(self, j: int, leader_first: bool, wipe_first: bool) -> None:
        """A macro step to a deep state: the whole replacement of a voter's lost disk, driven to its end
        where the network allows: remove it, stop it, then wipe it and re-add it (docs/operating.md) or
        re-add it and wipe it once that commits (jepsen_like), promote it; stale messages of the old store
        may still be in flight."""
        self._count()
        if any(n.recovering_until for n in self.c.nodes.values()):
            return  # one damaged store at a time (see damage_log)
        c, checker = self.c, self.checker
        assert checker is not None
        if not self._settle(lambda: c.leader() is not None):
            return
        voters = sorted(c.core(c.leader() or "").membership.voters)
        node = (c.leader() or "") if leader_first else voters[j % len(voters)]
        if len(voters) < 2 or not self._change_at_leader(ConfChange(ConfChangeOp.REMOVE, node)):
            return
        if not self._settle(lambda: node not in checker.committed_config[1].members):
            return
        if c.nodes[node].alive:
            c.crash(node)
        if wipe_first:
            self._wipe(node)
        else:
            self.to_wipe.add(node)
        if not self._change_at_leader(ConfChange(ConfChangeOp.ADD_LEARNER, node)):
            return
        if not self._settle(lambda: node in checker.committed_config[1].members):
            return
        if not wipe_first:
            self._wipe(node)
        OUTCOMES["replaced_disks"] = OUTCOMES.get("replaced_disks", 0) + 1
        if self._settle(lambda: c.core(node).log.last_index() >= checker.committed_config[0]):
            self._change_at_leader(ConfChange(ConfChangeOp.PROMOTE, node))
            self._settle(lambda: node in checker.committed_config[1].voters)

    @rule(k=st.integers(0, 4), lose=st.integers(1, 8), running=st.booleans())
    def damage_log(self, k: int, lose: int, running: bool) -> None:
        """Not a crash: a replica's durable log loses its last `lose` entries (a deleted segment, a cut or a
        flipped bit in fsynced data), and it restarts recovering; or, `running`, a running replica finds
        the damage mid-run and repairs in place (`Cluster.repair_in_place`: no restart, a recovering core
        at once). One replica at a time: one heals before the next is damaged (two of three damaged at once
        may leave no quorum that can elect)."""
        self._count()
        c = self.c
        node = self._node(k)
        if any(n.recovering_until for n in c.nodes.values()) or c.stats["wipes"] or self.to_wipe:
            return  # (a replaced disk is a second damaged replica: not combined with this fault here)
        # and only a replica whose log another holds a log at least as up-to-date as: a replica that alone
        # held entries (uncommitted, or committed with its ack and since lost elsewhere) refuses every
        # candidate that lacks them and cannot lead without them, so the group may stay leaderless
        # and that other must be a voter of the replica's configuration: a node removed from the group
        # serves it nothing and a learner never leads, so a group whose one voter is damaged has no leader
        # to recover from and rightly stays leaderless
        log = c.nodes[node].log
        tip = (log.term_at(log.last_index), log.last_index)
        core = c.nodes[node].core
        members = core.membership.voters if core is not None else set()
        if not any(
            (other.log.term_at(other.log.last_index), other.log.last_index) >= tip
            for i, other in c.nodes.items()
            if i != node and other.alive and i in members
        ):
            return
        if running and c.nodes[node].alive:
            c.repair_in_place(node, c.nodes[node].log.last_index - lose)
            return
        if c.nodes[node].alive:
            c.crash(node)
        c.damage(node, c.nodes[node].log.last_index - lose)
        c.restart(node)

    @rule(k=st.integers(0, 6), keep=st.integers(0, 2))
    def compact(self, k: int, keep: int) -> None:
        self._count()
        self.c.compact(self._node(k), keep)

    @invariant()
    def safe(self) -> None:
        if self.checker is not None:
            self.checker.check()

    def teardown(self) -> None:
        if self.cluster is None or self.checker is None:
            return
        c = self.c
        c.heal()
        for i in c.ids:
            if not c.nodes[i].alive:
                c.restart(i)
        for _ in range(200):
            c.stabilize()
            self.checker.check()
            lead = c.leader()
            # a leader every member follows in its term (not a stale leader of an old term)
            members = sorted(c.core(lead).membership.members) if lead is not None else []
            # and no other node believes it leads (a removed node is not followed but must step down too)
            if (
                lead is not None
                and all(
                    c.core(i).current_term == c.core(lead).current_term and c.core(i).leader_id == lead for i in members
                )
                and all(c.core(i).role is not Role.LEADER for i in c.ids if i != lead)
            ):
                core = c.core(lead)
                if core.log.term(core.commit_index) == core.current_term and all(
                    len(c.nodes[i].applied) >= core.commit_index for i in members
                ):
                    break
            c.tick()
        else:
            raise AssertionError(f"no leader or no progress after healing (seed {c.seed})\n{c.describe()}")
        assert sum(1 for i in c.ids if c.core(i).role is Role.LEADER) == 1
        self.checker.assert_all_acked_applied(members)
        for key, value in (
            ("acked", len(self.checker.acked)),
            ("reads", self.checker.answered_reads),
            ("terms", len(self.checker.leaders)),
            ("crashes", c.stats["crashes"]),
            ("timeout_now", c.stats["sent.TimeoutNow"]),
            ("snapshots_installed", c.stats["snapshots_installed"]),
            ("wipes", c.stats["wipes"]),
            ("damages", c.stats["damages"]),
            ("recoveries", c.stats["recoveries"]),
            ("repairs_in_place", c.stats["repairs"]),
            ("final_voters", len(c.core(lead).membership.voters)),
            ("examples", 1),
        ):
            OUTCOMES[key] = OUTCOMES.get(key, 0) + value


class Raft5Machine(RaftMachine):
    """5 nodes without check-quorum: a leader cut into a minority keeps believing it leads (stale reads and
    proposals at a deposed leader get exercised)."""

    N = 5
    CONFIG: ClassVar[dict[str, object]] = {"check_quorum": False, "max_inflight_msgs": 2}
    NAME = "raft5"


class RaftLeaseMachine(RaftMachine):
    """Lease reads, with every node ticking together (leases assume bounded clock drift)."""

    CONFIG: ClassVar[dict[str, object]] = {
        "read_only": ReadOnlyOption.LEASE,
        "max_append_bytes": 4,
        "lazy_commit": True,
    }
    NAME = "raft3-lease"


class RaftNoPreVoteMachine(RaftMachine):
    CONFIG: ClassVar[dict[str, object]] = {"pre_vote": False, "check_quorum": False, "max_append_bytes": 2}
    NAME = "raft3-plain"


def _report(line: str) -> None:
    """Print a summary; also append it to $DLEDGER_SIM_REPORT (xdist hides prints)."""
    print(line)
    OUTCOMES.clear()
    path = os.environ.get("DLEDGER_SIM_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _settings(examples: int, derandomize: bool) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=STEPS,
        derandomize=derandomize,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


MACHINES = [RaftMachine, Raft5Machine, RaftLeaseMachine, RaftNoPreVoteMachine]


@pytest.fixture
def _fixed_constants(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hypothesis's pool of local-source constants, emptied (see the module docstring). Private API: if a
    Hypothesis version moves it, this does nothing rather than fail."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover
        yield
        return
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if not hasattr(providers, "_get_local_constants") or not hasattr(providers, "Constants") or cache is None:
        yield  # pragma: no cover
        return
    empty = providers.Constants()
    monkeypatch.setattr(providers, "_get_local_constants", lambda: empty)
    cache.cache.clear()  # entries computed from the pool as it was
    yield
    cache.cache.clear()


def _run_derandomized(machine: type[RaftMachine], examples: int) -> None:
    STEP_COUNTER.pop(machine.NAME, None)
    OUTCOMES.clear()  # a failed machine's counts must not leak into the next one's report
    machine.TestCase.settings = _settings(examples, derandomize=True)
    machine.TestCase().runTest()
    steps = STEP_COUNTER.get(machine.NAME, 0)
    _report(f"{machine.NAME}: {examples} examples, {steps} steps explored; reached {OUTCOMES}")
    assert steps >= examples * 10, f"the simulation explored only {steps} steps"


@pytest.mark.usefixtures("_fixed_constants")
@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.NAME)
def test_simulation_quick(machine: type[RaftMachine]) -> None:
    _run_derandomized(machine, QUICK_EXAMPLES if machine.N == 3 else QUICK_EXAMPLES // 2)


@pytest.mark.sweep
@pytest.mark.usefixtures("_fixed_constants")
@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.NAME)
def test_simulation(machine: type[RaftMachine]) -> None:
    _run_derandomized(machine, CI_EXAMPLES if machine.N == 3 else CI_EXAMPLES // 2)


@pytest.mark.slow
@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.NAME)
def test_simulation_long(machine: type[RaftMachine]) -> None:
    STEP_COUNTER.pop(machine.NAME, None)
    OUTCOMES.clear()
    machine.TestCase.settings = _settings(CI_EXAMPLES * 100, derandomize=False)
    machine.TestCase().runTest()
    steps = STEP_COUNTER.get(machine.NAME, 0)
    _report(f"{machine.NAME} (long, random): {CI_EXAMPLES * 100} examples, {steps} steps; reached {OUTCOMES}")
