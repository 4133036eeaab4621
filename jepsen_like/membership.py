"""Membership faults: remove and re-add nodes, grow the group with a spare and shrink it, against the live group.

Every change goes through `DLedgerClient` (`add_learner`, `promote`, `remove`, `members`) with a deadline,
and is recorded as one step `{"op", "node", "outcome", ...}` in the nemesis's detail, where the outcome is
`ok` (committed: the reply carries the configuration after it), `fail` (definitely not done) or `info`
(unknown: a timeout after sending). An unknown outcome is never assumed: the `MemberView` keeps it as
`unknown` until a later `members()` reading resolves it.

Nemeses (each one change sequence at a time; the schedule never runs two at once):
- `membership`: start removes a voter (the leader half of the time) and stop adds it back as a fresh member,
  or start grows the group with a spare slot and stop removes it again;
- `replace`: start adds the spare and removes a voter (the leader half of the time) in its place, stop adds
  the voter back fresh and removes the spare; without a free spare it replaces the voter by a wiped copy of
  itself at once (a lost disk).

Adding a node "fresh" (`join_fresh`): stop its process, `add_learner`, then wipe its store and start it with
`--join`, wait until it has applied what the leader had committed, `promote`. The learner is added before its
store is wiped, because a committed `add_learner` proves that the node's removal is committed (a change is
accepted only when no other is pending): a node whose removal might still roll back is never wiped.

`restore` (after healing) brings the group to a configuration in which every running node is a voter and
every member runs. Invariants: at least two voters remain after a removal; a node starts with `--join` only
on an empty store; the view changes only from a committed reply or a `members()` reading.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dledger.client.client import DLedgerClient, Member
from dledger.client.client_policy import NotWrittenError, OutcomeUnknownError

if TYPE_CHECKING:
    from jepsen_like.cluster import Cluster

__all__ = ["MEMBERSHIP_NEMESES", "MemberView", "join_fresh", "read_members", "restore"]

Detail = dict[str, Any]
CHANGE_TIMEOUT = 5.0  # add_learner / remove
PROMOTE_TIMEOUT = 10.0  # promote: refused (BUSY) while the learner lags, retried until then
CATCH_UP_TIMEOUT = 10.0
MEMBERS_TIMEOUT = 3.0
MIN_VOTERS = 2  # never remove a voter when fewer would remain
RESTORE_TIMEOUT = 120.0


@dataclass
class MemberView:
    """What the harness knows of the configuration: the last committed reply or `members()` reading, and
    the changes since then whose outcome is unknown."""

    voters: set[str]
    learners: set[str] = field(default_factory=set)
    unknown: list[str] = field(default_factory=list)

    def members(self) -> set[str]:
        return self.voters | self.learners

    def update(self, members: Iterable[Member]) -> None:
        members = list(members)
        self.voters = {m.id for m in members if m.voter}
        self.learners = {m.id for m in members if not m.voter}
        self.unknown.clear()

    def to_dict(self) -> Detail:
        return {"voters": sorted(self.voters), "learners": sorted(self.learners), "unknown": list(self.unknown)}


class Steps(list[Detail]):
    """The steps of one nemesis action, as recorded in its detail."""

    def add(self, op: str, node: str, outcome: str, began: float, **extra: Any) -> Detail:
        step = {"op": op, "node": node, "outcome": outcome, "ms": round((time.monotonic() - began) * 1000), **extra}
        self.append(step)
        return step


def _client(cluster: Cluster, timeout: float) -> DLedgerClient:
    return cluster.client(timeout=timeout, rpc_timeout=min(1.0, timeout))


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_members(cluster: Cluster, steps: Steps | None = None, timeout: float = MEMBERS_TIMEOUT) -> bool:
    """Ask the leader for the configuration and take it as the view; False when no leader answered."""
    began = time.monotonic()
    try:
        with _client(cluster, timeout) as c:
            members = c.members(timeout=timeout)
    except Exception as exc:
        if steps is not None:
            steps.add("members", "", "fail", began, error=_err(exc))
        return False
    resolved = list(cluster.view.unknown)
    cluster.view.update(members)
    if steps is not None:
        steps.add("members", "", "ok", began, **cluster.view.to_dict(), **({"resolved": resolved} if resolved else {}))
    return True


def _change(cluster: Cluster, steps: Steps, op: str, node: str, timeout: float = CHANGE_TIMEOUT) -> str:
    """One membership change through the client: its outcome, ok / fail / info."""
    began = time.monotonic()
    try:
        with _client(cluster, timeout) as c:
            if op == "add-learner":
                result = c.add_learner(node, cluster.addresses[node], timeout=timeout)
            elif op == "promote":
                result = c.promote(node, timeout=timeout)
            else:
                result = c.remove(node, timeout=timeout)
    except NotWrittenError as exc:
        steps.add(op, node, "fail", began, error=_err(exc))
        return "fail"
    except (OutcomeUnknownError, Exception) as exc:  # anything else: the change may have happened
        cluster.view.unknown.append(f"{op} {node}")
        steps.add(op, node, "info", began, error=_err(exc))
        return "info"
    cluster.view.update(result.members)
    steps.add(op, node, "ok", began, index=result.index, voters=sorted(cluster.view.voters),
              learners=sorted(cluster.view.learners))  # fmt: skip
    return "ok"


def _status(cluster: Cluster, node: str) -> Any:
    with cluster.node_client(node, timeout=0.5, rpc_timeout=0.5) as c:
        return c.status(timeout=0.5)[0]


def _wait_caught_up(cluster: Cluster, steps: Steps, node: str) -> bool:
    """Wait until `node` has applied what the leader had committed when the wait began."""
    began = time.monotonic()
    deadline = began + CATCH_UP_TIMEOUT
    target = None
    while time.monotonic() < deadline:
        if target is None:
            leader = cluster.leader()
            if leader is not None and leader != node:
                s = _status(cluster, leader)
                target = s.commit_index if s.reachable else None
        if target is not None:
            s = _status(cluster, node)
            if s.reachable and s.applied_index >= target:
                steps.add("caught-up", node, "ok", began, applied=s.applied_index, target=target)
                return True
        time.sleep(0.2)
    steps.add("caught-up", node, "fail", began, target=target)
    return False


def promote(cluster: Cluster, steps: Steps, node: str) -> str:
    if not cluster.running(node):
        return "fail"
    _wait_caught_up(cluster, steps, node)  # the promotion itself is refused while it lags: try anyway
    return _change(cluster, steps, "promote", node, PROMOTE_TIMEOUT)


def join_fresh(cluster: Cluster, steps: Steps, node: str) -> str:
    """Add the non-member `node` as a fresh voter: stop it, add it as a learner, wipe its store, start it with
    `--join`, promote it once caught up. Returns the outcome of the last change tried."""
    began = time.monotonic()
    if cluster.running(node):
        code = cluster.kill(node, signal.SIGTERM)
        steps.add("stop", node, "ok", began, exit=code)
    outcome = _change(cluster, steps, "add-learner", node)
    if outcome != "ok":  # not provably removed for good: its store stays; healing restarts it as it was
        return outcome
    began = time.monotonic()
    wiped = cluster.wipe(node)
    cluster.start(node, join=True)
    steps.add("wipe-start-join", node, "ok", began, wiped=str(wiped) if wiped else None,
              peers=cluster.joined[node])  # fmt: skip
    return promote(cluster, steps, node)


def _remove(cluster: Cluster, steps: Steps, node: str) -> str:
    if node in cluster.view.voters and len(cluster.view.voters) - 1 < MIN_VOTERS:
        steps.add("remove", node, "skipped", time.monotonic(), why=f"fewer than {MIN_VOTERS} voters would remain")
        return "skipped"
    return _change(cluster, steps, "remove", node)


def _free_spare(cluster: Cluster) -> str | None:
    free = [s for s in cluster.spares if s not in cluster.view.members() and not cluster.running(s)]
    return free[0] if free else None


def _victim(cluster: Cluster, rng: random.Random, leader_first: bool, avoid: Iterable[str] = ()) -> str | None:
    voters = sorted(cluster.view.voters - set(avoid))
    if not voters:
        return None
    leader = cluster.leader()
    if leader_first and leader in voters:
        return leader
    return rng.choice([v for v in voters if v != leader] or voters)


def _membership_start(cluster: Cluster, rng: random.Random) -> Detail:
    if cluster.broker:
        return {"skipped": "membership changes of broker replicas are not driven by jepsen_like"}
    action = rng.choice(["remove", "remove-leader", "grow"])
    steps = Steps()
    if not read_members(cluster, steps):
        return {"action": action, "steps": steps, "outcome": "fail", "view": cluster.view.to_dict()}
    spare = _free_spare(cluster)
    if action == "grow" and spare is None:
        action = "remove"
    if action.startswith("remove") and len(cluster.view.voters) - 1 < MIN_VOTERS and spare is not None:
        action = "grow"
    if action == "grow":
        assert spare is not None
        outcome = join_fresh(cluster, steps, spare)
        return {"action": "grow", "node": spare, "steps": steps, "outcome": outcome, "view": cluster.view.to_dict()}
    node = _victim(cluster, rng, action == "remove-leader")
    if node is None:
        return {"skipped": "no voter to remove", "steps": steps}
    outcome = _remove(cluster, steps, node)
    return {"action": action, "node": node, "steps": steps, "outcome": outcome, "view": cluster.view.to_dict()}


def _membership_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    node, action = detail.get("node"), detail.get("action", "")
    steps = Steps()
    if not node or not read_members(cluster, steps):
        return {"action": action, "node": node, "steps": steps, "outcome": "fail", "view": cluster.view.to_dict()}
    outcome = _undo_grow(cluster, steps, node) if action == "grow" else _undo_remove(cluster, steps, node)
    return {"action": f"undo {action}", "node": node, "steps": steps, "outcome": outcome,
            "view": cluster.view.to_dict()}  # fmt: skip


def _undo_grow(cluster: Cluster, steps: Steps, node: str) -> str:
    """Remove the spare `node` again; stop its process once its removal is known (else it keeps running)."""
    outcome = _remove(cluster, steps, node) if node in cluster.view.members() else "ok"
    if outcome == "info":
        read_members(cluster, steps)
    if node not in cluster.view.members() and not cluster.view.unknown:
        began = time.monotonic()
        code = cluster.stop(node)
        steps.add("stop", node, "ok", began, exit=code)
    return outcome


def _undo_remove(cluster: Cluster, steps: Steps, node: str) -> str:
    """Bring a removed voter back: fresh if it is no member, promoted if a learner, nothing if a voter."""
    if node in cluster.view.voters:
        steps.add("noop", node, "ok", time.monotonic(), why="still a voter (its removal did not happen)")
        return "ok"
    if node in cluster.view.learners:
        return promote(cluster, steps, node)
    return join_fresh(cluster, steps, node)


def _replace_start(cluster: Cluster, rng: random.Random) -> Detail:
    if cluster.broker:
        return {"skipped": "membership changes of broker replicas are not driven by jepsen_like"}
    leader_first = rng.random() < 0.5
    pick = random.Random(rng.randrange(2**32))
    steps = Steps()
    if not read_members(cluster, steps):
        return {"action": "replace", "steps": steps, "outcome": "fail", "view": cluster.view.to_dict()}
    spare = _free_spare(cluster)
    node = _victim(cluster, pick, leader_first)
    if node is None:
        return {"skipped": "no voter to replace", "steps": steps}
    if spare is None:  # a lost disk: the voter is removed and comes back wiped at once
        outcome = _remove(cluster, steps, node)
        if outcome == "ok":
            outcome = join_fresh(cluster, steps, node)
        return {"action": "replace-wiped", "node": node, "steps": steps, "outcome": outcome,
                "view": cluster.view.to_dict()}  # fmt: skip
    outcome = join_fresh(cluster, steps, spare)
    if outcome == "ok":
        outcome = _remove(cluster, steps, node)
    return {"action": "replace", "node": node, "spare": spare, "steps": steps, "outcome": outcome,
            "view": cluster.view.to_dict()}  # fmt: skip


def _replace_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    node, spare = detail.get("node"), detail.get("spare")
    steps = Steps()
    if not node or not read_members(cluster, steps):
        return {"action": "undo replace", "steps": steps, "outcome": "fail", "view": cluster.view.to_dict()}
    outcome = _undo_remove(cluster, steps, node)
    if spare and outcome == "ok" and node in cluster.view.voters:
        outcome = _undo_grow(cluster, steps, spare)
    return {"action": "undo replace", "node": node, "spare": spare, "steps": steps, "outcome": outcome,
            "view": cluster.view.to_dict()}  # fmt: skip


def restore(cluster: Cluster, timeout: float = RESTORE_TIMEOUT) -> Detail:
    """After healing: every running node a voter, every member running. Returns what was done and the
    configuration reached (`done` False if the deadline passed first)."""
    steps = Steps()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not read_members(cluster, steps):
            time.sleep(0.5)
            continue
        view = cluster.view
        # a member must run, and so must a node left stopped by a change that did not go through
        for node in sorted((view.members() | cluster.should_run) - set(cluster.live())):
            cluster.procs.pop(node, None)
            cluster.start(node)
            steps.add("start", node, "ok", time.monotonic())
        live = set(cluster.live())
        if view.voters == live and not view.learners:
            return {"done": True, "steps": steps, "view": view.to_dict()}
        for node in sorted(live - view.voters):
            if node in view.learners:
                promote(cluster, steps, node)
            else:
                join_fresh(cluster, steps, node)
            if not read_members(cluster, steps):
                break
    return {"done": False, "steps": steps, "view": cluster.view.to_dict()}


MEMBERSHIP_NEMESES = {
    "membership": (_membership_start, _membership_stop),
    "replace": (_replace_start, _replace_stop),
}
