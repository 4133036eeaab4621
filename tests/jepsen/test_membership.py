"""The membership nemeses without processes: their schedule, and their bookkeeping against a fake group.

`FakeGroup` plays the live group behind the client API (`members`, `add_learner`, `promote`, `remove`) and
can make a change fail or end with an unknown outcome (done or not); `FakeCluster` records what the nemesis
did to the processes and stores, in order.
"""

from __future__ import annotations

import itertools
import pathlib
import random
from typing import Any

import pytest

from dledger.client.client import Member, MembershipResult, NodeInfo
from dledger.client.client_policy import NotLeaderError, OutcomeUnknownError
from jepsen_like import membership, nemesis
from jepsen_like.cluster import Cluster
from jepsen_like.membership import MemberView, restore
from jepsen_like.nemesis import make_schedule
from jepsen_like.procutil import RunState


class FakeGroup:
    def __init__(self, voters: list[str], leader: str) -> None:
        self.voters, self.learners = set(voters), set()
        self.leader = leader
        self.index = 10
        self.calls: list[tuple[str, str]] = []
        self.faults: dict[str, tuple[str, bool]] = {}  # op -> ("fail" | "info", applied anyway)
        self.members_down = False

    def members(self) -> tuple[Member, ...]:
        return tuple(Member(i, "", i in self.voters) for i in sorted(self.voters | self.learners))

    def change(self, op: str, node: str) -> MembershipResult:
        self.calls.append((op, node))
        kind, applied = self.faults.pop(op, ("", True))
        if kind == "fail":
            raise NotLeaderError("no leader")
        if applied:
            if op == "add-learner":
                self.learners.add(node)
            elif op == "promote":
                self.learners.discard(node)
                self.voters.add(node)
            else:
                self.voters.discard(node)
                self.learners.discard(node)
                if node == self.leader:  # it steps down once its removal commits
                    self.leader = min(self.voters)
            self.index += 1
        if kind == "info":
            raise OutcomeUnknownError("no reply after sending")
        return MembershipResult(self.index, self.members())


class FakeClient:
    def __init__(self, group: FakeGroup) -> None:
        self.group = group

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def members(self, timeout: float | None = None) -> tuple[Member, ...]:
        if self.group.members_down:
            raise NotLeaderError("no leader")
        return self.group.members()

    def add_learner(self, node: str, address: str, timeout: float | None = None) -> MembershipResult:
        return self.group.change("add-learner", node)

    def promote(self, node: str, timeout: float | None = None) -> MembershipResult:
        return self.group.change("promote", node)

    def remove(self, node: str, timeout: float | None = None) -> MembershipResult:
        return self.group.change("remove", node)

    def status(self, timeout: float | None = None) -> list[NodeInfo]:
        return [NodeInfo("x", "", True, commit_index=self.group.index, applied_index=self.group.index)]


class FakeCluster:
    def __init__(self, root: pathlib.Path, n: int = 3, leader: str = "n0") -> None:
        self.root = root
        self.ids = [f"n{k}" for k in range(n + 1)]
        self.initial, self.spares = self.ids[:n], self.ids[n:]
        self.addresses = {i: f"10.0.0.{k}:1" for k, i in enumerate(self.ids)}
        self.view = MemberView(set(self.initial))
        self.group = FakeGroup(self.initial, leader)
        self.procs: dict[str, object] = {i: object() for i in self.initial}
        self.should_run = set(self.initial)
        self.joined: dict[str, list[str]] = {}
        self.broker = False
        self.did: list[tuple[str, str]] = []  # what happened to processes and stores, in order

    def client(self, **kwargs: float) -> FakeClient:
        return FakeClient(self.group)

    node_client = lambda self, node, **kw: FakeClient(self.group)  # noqa: E731

    def leader(self) -> str:
        return self.group.leader

    def running(self, node: str) -> bool:
        return node in self.procs

    def live(self) -> list[str]:
        return [i for i in self.ids if i in self.procs]

    def kill(self, node: str, sig: int = 9) -> int:
        self.procs.pop(node, None)
        self.did.append(("kill", node))
        return 0

    def stop(self, node: str) -> int:
        self.should_run.discard(node)
        return self.kill(node)

    def wipe(self, node: str) -> None:
        assert not self.running(node)
        self.did.append(("wipe", node))

    def start(self, node: str, clock_rate: float | None = None, *, join: bool = False) -> None:
        assert node not in self.procs
        if join:
            self.joined[node] = sorted(self.view.members() - {node})
        self.procs[node] = object()
        self.should_run.add(node)
        self.did.append(("start-join" if join else "start", node))


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership.time, "sleep", lambda s: None)


def _ops(detail: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["op"], s["node"], s["outcome"]) for s in detail["steps"] if s["op"] != "members"]


def test_membership_changes_follow_their_own_sequence_and_leave_other_schedules_alone() -> None:
    others = nemesis.expand(["kill", "partition"])
    names = [*others, *nemesis.expand(["member"])]
    with_members = make_schedule(random.Random(42), names, 120)
    assert with_members == make_schedule(random.Random(42), names, 120)  # the seed replays it
    assert [s for s in with_members if s.nemesis in others] == make_schedule(random.Random(42), others, 120)
    changes = [s for s in with_members if s.nemesis in nemesis.MEMBERSHIP_FAULTS]
    assert len(changes) >= 3 and {s.nemesis for s in changes} == {"membership", "replace"}
    assert all(x.at + x.hold < y.at for x, y in itertools.pairwise(changes))  # never two at once
    assert any(x.nemesis in others and x.at < y.at < x.at + x.hold for x, y in itertools.product(with_members, changes))
    assert nemesis.uses_membership(names) and not nemesis.uses_membership(others)


def test_remove_the_leader_then_add_it_back_fresh(tmp_path: pathlib.Path) -> None:
    fake: Any = FakeCluster(tmp_path, leader="n1")
    detail = _start_with(fake, "remove-leader")
    assert detail["node"] == "n1" and _ops(detail) == [("remove", "n1", "ok")]
    assert fake.view.voters == {"n0", "n2"} and "n1" in fake.procs  # a removed node keeps running
    undo = membership._membership_stop(fake, random.Random(1), detail)
    assert _ops(undo) == [("stop", "n1", "ok"), ("add-learner", "n1", "ok"), ("wipe-start-join", "n1", "ok"),
                          ("caught-up", "n1", "ok"), ("promote", "n1", "ok")]  # fmt: skip
    # added as a learner before its store is wiped: its removal is then known to be committed
    assert fake.did == [("kill", "n1"), ("wipe", "n1"), ("start-join", "n1")]
    assert fake.joined["n1"] == ["n0", "n2"] and fake.view.voters == {"n0", "n1", "n2"}


def _start_with(fake: Any, action: str) -> dict[str, Any]:
    """Run the membership nemesis's start with the given action drawn."""
    for seed in range(100):
        if random.Random(seed).choice(["remove", "remove-leader", "grow"]) == action:
            return membership._membership_start(fake, random.Random(seed))
    raise AssertionError(action)


def test_grow_with_the_spare_then_remove_and_stop_it(tmp_path: pathlib.Path) -> None:
    fake: Any = FakeCluster(tmp_path)
    detail = _start_with(fake, "grow")
    assert detail["node"] == "n3" and fake.view.voters == {"n0", "n1", "n2", "n3"}
    assert fake.did == [("wipe", "n3"), ("start-join", "n3")] and fake.joined["n3"] == ["n0", "n1", "n2"]
    undo = membership._membership_stop(fake, random.Random(1), detail)
    assert _ops(undo) == [("remove", "n3", "ok"), ("stop", "n3", "ok")]
    assert "n3" not in fake.should_run and fake.view.voters == {"n0", "n1", "n2"}


def test_an_unknown_removal_is_resolved_by_reading_the_members(tmp_path: pathlib.Path) -> None:
    for applied in (True, False):
        fake: Any = FakeCluster(tmp_path)
        fake.group.faults["remove"] = ("info", applied)
        detail = _start_with(fake, "remove")
        node = detail["node"]
        assert detail["outcome"] == "info" and fake.view.unknown == [f"remove {node}"]
        assert node in fake.view.voters  # not assumed either way
        undo = membership._membership_stop(fake, random.Random(1), detail)
        assert undo["steps"][0]["resolved"] == [f"remove {node}"] and not fake.view.unknown
        if applied:
            assert ("add-learner", node, "ok") in _ops(undo) and ("wipe", node) in fake.did
        else:
            assert _ops(undo) == [("noop", node, "ok")] and fake.did == []
        assert fake.view.voters == {"n0", "n1", "n2"}


def test_a_node_whose_re_add_is_not_known_is_never_wiped(tmp_path: pathlib.Path) -> None:
    fake: Any = FakeCluster(tmp_path)
    detail = _start_with(fake, "remove")
    node = detail["node"]
    fake.group.faults["add-learner"] = ("info", False)
    undo = membership._membership_stop(fake, random.Random(1), detail)
    assert _ops(undo) == [("stop", node, "ok"), ("add-learner", node, "info")]
    assert fake.did == [("kill", node)] and node in fake.should_run  # stopped with its store, not wiped
    # healing: restore starts it again (with its store) and then adds it back fresh
    done = restore(fake, timeout=5)
    assert done["done"] and fake.view.voters == {"n0", "n1", "n2"} and node in fake.procs
    assert fake.did[1:] == [("start", node), ("kill", node), ("wipe", node), ("start-join", node)]


def test_never_fewer_than_two_voters(tmp_path: pathlib.Path) -> None:
    fake: Any = FakeCluster(tmp_path, n=2)
    fake.spares = []
    detail = _start_with(fake, "remove")
    assert _ops(detail) == [("remove", detail["node"], "skipped")] and fake.group.calls == []


def test_replace_swaps_a_voter_for_the_spare_and_back(tmp_path: pathlib.Path) -> None:
    fake: Any = FakeCluster(tmp_path, leader="n2")
    detail = membership._replace_start(fake, random.Random(3))
    node = detail["node"]
    assert detail["spare"] == "n3" and fake.view.voters == {"n0", "n1", "n2", "n3"} - {node}
    assert [c for c in fake.group.calls] == [("add-learner", "n3"), ("promote", "n3"), ("remove", node)]
    membership._replace_stop(fake, random.Random(4), detail)
    assert fake.view.voters == {"n0", "n1", "n2"} and "n3" not in fake.procs
    # without a free spare it replaces the voter by a wiped copy of itself
    fake.procs["n3"] = object()
    detail = membership._replace_start(fake, random.Random(3))
    assert detail["action"] == "replace-wiped" and fake.view.voters == {"n0", "n1", "n2"}
    assert fake.did[-3:] == [("kill", detail["node"]), ("wipe", detail["node"]), ("start-join", detail["node"])]


def test_restore_makes_every_running_node_a_voter(tmp_path: pathlib.Path) -> None:
    fake: Any = FakeCluster(tmp_path)
    fake.group.voters, fake.group.learners = {"n0", "n1"}, {"n3"}  # n2 removed but running, n3 a learner
    fake.procs["n3"] = object()
    done = restore(fake, timeout=5)
    assert done["done"] and done["view"]["voters"] == ["n0", "n1", "n2", "n3"]
    assert ("promote", "n3") in fake.group.calls and ("wipe", "n2") in fake.did
    fake.group.members_down = True  # no leader: it gives up at its deadline, saying so
    assert not restore(fake, timeout=0.05)["done"]


def test_cluster_peers_for_initial_and_joining_nodes(tmp_path: pathlib.Path) -> None:
    cluster = Cluster(tmp_path, 3, flush="sync", net="proxy", state=RunState("test"), spares=1)
    try:
        assert cluster.initial == ["n0", "n1", "n2"] and cluster.spares == ["n3"]
        assert "n3" not in cluster._node_peers("n0")  # the spare is not an initial voter
        cluster.view.voters = {"n0", "n2"}
        cluster.joined["n3"] = sorted(cluster.view.members())
        assert [p.split("-")[0] for p in cluster._node_peers("n3").split(";")] == ["n0", "n2", "n3"]
        store = cluster.store_dir("n1")
        (store / "log").mkdir(parents=True)
        moved = cluster.wipe("n1")
        assert moved is not None and (moved / "log").is_dir() and not store.exists()
        assert cluster.wipe("n1") is None and cluster.wipes == {"n1": 1}
    finally:
        cluster.close()


def test_the_ci_campaign_includes_one_membership_run() -> None:
    from jepsen_like.campaign import LONG_PLAN, MEMBER_PLAN, MEMBER_SHORT, SHORT_PLAN, plans

    assert MEMBER_SHORT[0] in SHORT_PLAN and all(p in LONG_PLAN for p in MEMBER_PLAN)
    assert plans(short=True, with_broker=False, broker_only=False, membership_only=True) == MEMBER_SHORT
    assert plans(short=False, with_broker=False, broker_only=False, membership_only=True) == MEMBER_PLAN
    assert all(nemesis.uses_membership(nemesis.expand(p.nemeses)) for p in MEMBER_PLAN)
