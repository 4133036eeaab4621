"""Nemeses: faults with a `start` and a `stop`, and the seeded schedule that runs them.

Every nemesis acts on a `Cluster` and draws its choices from the `random.Random` it is given; `start`
returns a JSON-safe description of what it did (or None when it had to skip itself, saying why in the
`skipped` of the description), and `stop` undoes it: after `stop` every node runs, unpaused, at the normal
clock rate, and the network is whole. Invariant: `heal_everything` brings any cluster back to that state,
whatever faults are active, so a run ends healed even after an error in a nemesis.

Names: kill-random, kill-leader, pause-random, pause-leader, partition-leader, partition-halves,
partition-ring, partition-bridge, pause-isolate-leader, restart, lost-writes, damage-log (`nemesis_damage.py`:
a stopped follower's log damaged inside its durable range), clock-skew, transfer-storm,
the membership changes of `membership.py`: membership, replace (group `member`), and the compactions of
`compaction.py`: compact-follower, compact-all (group `compact`; process faults for `overlap`). Membership
changes are not undone by `heal_everything` (a removed node stays removed): `membership.restore` does that
after it; nor are compactions (what is dropped is gone; the follower catches up by snapshot).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jepsen_like.cluster import Cluster
from jepsen_like.compaction import COMPACTION_NEMESES
from jepsen_like.membership import MEMBERSHIP_NEMESES
from jepsen_like.nemesis_damage import DAMAGE_NEMESES

__all__ = [
    "NEMESES",
    "Nemesis",
    "Schedule",
    "heal_everything",
    "make_schedule",
    "partition_cuts",
    "stop_storms",
    "uses_compaction",
    "uses_membership",
]

Detail = dict[str, Any]


def _target(cluster: Cluster, rng: random.Random, leader: bool) -> str | None:
    running = [n for n in cluster.ids if cluster.running(n) and n not in cluster.paused]
    if not running:
        return None
    if leader:
        found = cluster.leader()
        if found in running:
            return found
    return rng.choice(running)


Cuts = set[frozenset[str]]


def partition_cuts(kind: str, ids: list[str], rng: random.Random, leader: str | None) -> tuple[Cuts, list[list[str]]]:
    """The cut pairs of a partition `kind`, and a description of who sees whom."""
    ids = list(ids)
    n = len(ids)
    if kind == "leader":
        alone = leader if leader in ids else rng.choice(ids)
        return {frozenset((alone, o)) for o in ids if o != alone}, [[alone], [o for o in ids if o != alone]]
    if kind == "halves":
        rng.shuffle(ids)
        small, big = ids[: n // 2], ids[n // 2 :]
        return {frozenset((a, b)) for a in small for b in big}, [small, big]
    if kind == "ring":  # majorities ring: each node sees its ring neighbours, a majority with itself
        rng.shuffle(ids)
        reach = max(1, (n - 1) // 4) if n > 3 else 1
        cuts: Cuts = set()
        for i, a in enumerate(ids):
            for j, b in enumerate(ids):
                dist = min((i - j) % n, (j - i) % n)
                if a != b and dist > reach:
                    cuts.add(frozenset((a, b)))
        if n == 3:  # a 3-node ring of reach 1 is fully connected: cut one edge, which makes a bridge
            cuts = {frozenset((ids[0], ids[2]))}
        return cuts, [ids]
    if kind == "bridge":  # two halves joined only through one node
        rng.shuffle(ids)
        middle, rest = ids[0], ids[1:]
        left, right = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        return {frozenset((a, b)) for a in left for b in right}, [[*left, middle], [middle, *right]]
    raise ValueError(f"unknown partition kind {kind!r}")


@dataclass
class Nemesis:
    name: str
    start: Callable[[Cluster, random.Random], Detail]
    stop: Callable[[Cluster, random.Random, Detail], Detail]


# ---- process faults ----
def _kill(leader: bool) -> Callable[[Cluster, random.Random], Detail]:
    def start(cluster: Cluster, rng: random.Random) -> Detail:
        node = _target(cluster, rng, leader)
        if node is None:
            return {"skipped": "no running node"}
        cluster.kill(node, signal.SIGKILL)
        return {"node": node}

    return start


def _restart_killed(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    node = detail.get("node")
    if node and not cluster.running(node) and node in cluster.should_run:  # not a spare removed meanwhile
        cluster.procs.pop(node, None)
        cluster.start(node)
    return {"node": node}


def _pause(leader: bool) -> Callable[[Cluster, random.Random], Detail]:
    def start(cluster: Cluster, rng: random.Random) -> Detail:
        node = _target(cluster, rng, leader)
        if node is None:
            return {"skipped": "no running node"}
        cluster.pause(node)
        return {"node": node}

    return start


def _resume(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    node = detail.get("node")
    if node:
        cluster.resume(node)
    return {"node": node}


def _pause_isolate_start(cluster: Cluster, rng: random.Random) -> Detail:
    """Pause the leader long enough for the others to elect a new one, cut it off, then resume it: it wakes
    up believing it still leads (the scenario of stale reads by a deposed leader)."""
    node = _target(cluster, rng, True)
    if node is None:
        return {"skipped": "no running node"}
    cluster.pause(node)
    time.sleep(rng.uniform(0.6, 1.5))  # the others elect a new leader in well under 0.6 s
    cluster.partition({frozenset((node, o)) for o in cluster.ids if o != node})
    cluster.resume(node)
    return {"node": node}


def _restart_start(cluster: Cluster, rng: random.Random) -> Detail:
    node = _target(cluster, rng, False)
    if node is None:
        return {"skipped": "no running node"}
    code = cluster.kill(node, signal.SIGTERM)
    return {"node": node, "exit": code}


# ---- network faults ----
def _partition(kind: str) -> Callable[[Cluster, random.Random], Detail]:
    def start(cluster: Cluster, rng: random.Random) -> Detail:
        leader = cluster.leader() if kind == "leader" else None
        cuts, groups = partition_cuts(kind, cluster.ids, rng, leader)
        cluster.partition(cuts)
        return {"groups": groups, "cuts": sorted(sorted(c) for c in cuts)}

    return start


def _heal(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    cluster.heal_network()
    return {}


# ---- lost un-fsynced writes ----
FRESH_REPORT_WAIT = 2.0  # seconds to wait for the node to publish a fresh DURABLE report before the kill


def _lost_writes_start(cluster: Cluster, rng: random.Random) -> Detail:
    """SIGKILL a node right after it published `<log>/DURABLE`, then cut its segment files back to those
    fsynced lengths: a power cut. The report can lag the truth by the time between its writing and the kill,
    so with flush=async this may cut a few bytes that were fsynced in that window (harsher than a power cut,
    never milder); the log's own flush checkpoint, fresher and also never beyond what is durable, narrows
    that window. With flush=sync, data is fsynced before an append returns, so data files are left whole and
    only index files (fsynced in the background in both modes) are cut."""
    node = _target(cluster, rng, rng.random() < 0.5)
    if node is None:
        return {"skipped": "no running node"}
    log_dir = cluster.log_dir(node)
    report = log_dir / "DURABLE"
    if not report.exists():
        return {"skipped": f"{report} does not exist: the node does not publish its durable lengths "
                           "(needs `dledger node --report-durable-ms`)"}  # fmt: skip
    before = report.stat().st_mtime_ns  # kill right after a fresh report, so that it lags as little as possible
    deadline = time.monotonic() + FRESH_REPORT_WAIT
    while time.monotonic() < deadline and report.stat().st_mtime_ns == before:
        time.sleep(0.002)
    cluster.kill(node, signal.SIGKILL)
    durable = json.loads(report.read_text())
    checkpoint = _checkpoint(log_dir)  # the log's own flush hint: also never more than is durable, and fresher
    if checkpoint is not None and checkpoint[0] in durable:
        durable[checkpoint[0]][0] = max(int(durable[checkpoint[0]][0]), checkpoint[1])
    cut: dict[str, list[int]] = {}
    for sub, k in (("data", 0), ("index", 1)):
        for path in sorted((log_dir / sub).iterdir()):
            if not path.name.isdigit():
                continue
            size = path.stat().st_size
            keep = int(durable[path.name][k]) if path.name in durable else 0
            if sub == "data" and cluster.flush == "sync":
                keep = size  # every published byte was fsynced before the append returned: a cut would lie
            if size > keep:
                os.truncate(path, keep)
                cut.setdefault(path.name, [0, 0])[k] = size - keep
    return {"node": node, "flush": cluster.flush, "cut_bytes": cut, "durable": durable}


def _checkpoint(log_dir: pathlib.Path) -> tuple[str, int] | None:
    """(segment name, fsynced data bytes) from the log's flush checkpoint, if this dledger has one."""
    try:
        from dledger.commitlog.checkpoint import read_checkpoint
        from dledger.commitlog.segment import segment_name
    except ImportError:
        return None
    cp = read_checkpoint(str(log_dir))
    return None if cp is None else (segment_name(cp.start), int(cp.data_len))


# ---- clock skew (libfaketime; matters for lease reads) ----
def _clock_start(cluster: Cluster, rng: random.Random) -> Detail:
    """Restart a node with its clock running at `rate` (libfaketime), make it the leader, then isolate it:
    a leader whose clock runs slow keeps believing in its lease after the others have elected a new leader,
    which is exactly when a lease read would be stale."""
    from jepsen_like.cluster import FAKETIME_LIB

    node = _target(cluster, rng, False)
    if node is None:
        return {"skipped": "no running node"}
    if not os.path.exists(FAKETIME_LIB):
        return {"skipped": "libfaketime is not installed (apt-get install libfaketime)"}
    rate = rng.choice([0.5, 0.5, 0.7, 1.5, 2.0])
    cluster.kill(node, signal.SIGKILL)
    cluster.start(node, clock_rate=rate)
    detail: Detail = {"node": node, "rate": rate, "lease_read": cluster.lease_read}
    deadline = time.monotonic() + 10.0
    with cluster.client(timeout=2.0, rpc_timeout=0.5) as client:
        while time.monotonic() < deadline and cluster.leader() != node:
            try:
                client.transfer_leadership(node)
            except Exception:
                time.sleep(0.2)
    detail["became_leader"] = cluster.leader() == node
    time.sleep(rng.uniform(0.2, 1.0))
    cluster.partition({frozenset((node, o)) for o in cluster.ids if o != node})
    detail["isolated"] = True
    return detail


def _clock_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    node = detail.get("node")
    cluster.heal_network()
    if node and node in cluster.clock:
        cluster.kill(node, signal.SIGKILL)
        cluster.start(node)
    return {"node": node}


# ---- leadership transfer storm ----
@dataclass
class _Storm:
    stop: threading.Event = field(default_factory=threading.Event)
    transfers: int = 0
    errors: int = 0


_storms: dict[int, _Storm] = {}


def _storm_start(cluster: Cluster, rng: random.Random) -> Detail:
    storm = _Storm()
    seed = rng.randrange(2**32)

    def loop() -> None:
        r = random.Random(seed)
        with cluster.client(timeout=2.0, rpc_timeout=0.5) as client:
            while not storm.stop.wait(r.uniform(0.1, 0.5)):
                try:
                    client.transfer_leadership(r.choice(cluster.ids))
                    storm.transfers += 1
                except Exception:
                    storm.errors += 1

    thread = threading.Thread(target=loop, name="transfer-storm", daemon=True)
    thread.start()
    _storms[id(thread)] = storm
    return {"storm": id(thread)}


def _storm_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    storm = _storms.pop(int(detail.get("storm", 0)), None)
    if storm is None:
        return {}
    storm.stop.set()
    return {"transfers": storm.transfers, "errors": storm.errors}


NEMESES: dict[str, Nemesis] = {
    "kill-random": Nemesis("kill-random", _kill(False), _restart_killed),
    "kill-leader": Nemesis("kill-leader", _kill(True), _restart_killed),
    "pause-random": Nemesis("pause-random", _pause(False), _resume),
    "pause-leader": Nemesis("pause-leader", _pause(True), _resume),
    "partition-leader": Nemesis("partition-leader", _partition("leader"), _heal),
    "partition-halves": Nemesis("partition-halves", _partition("halves"), _heal),
    "partition-ring": Nemesis("partition-ring", _partition("ring"), _heal),
    "partition-bridge": Nemesis("partition-bridge", _partition("bridge"), _heal),
    "pause-isolate-leader": Nemesis("pause-isolate-leader", _pause_isolate_start, _heal),
    "restart": Nemesis("restart", _restart_start, _restart_killed),
    "lost-writes": Nemesis("lost-writes", _lost_writes_start, _restart_killed),
    "clock-skew": Nemesis("clock-skew", _clock_start, _clock_stop),
    "transfer-storm": Nemesis("transfer-storm", _storm_start, _storm_stop),
    **{name: Nemesis(name, start, stop) for name, (start, stop) in MEMBERSHIP_NEMESES.items()},
    **{name: Nemesis(name, start, stop) for name, (start, stop) in COMPACTION_NEMESES.items()},
    **{name: Nemesis(name, start, stop) for name, (start, stop) in DAMAGE_NEMESES.items()},
}

GROUPS = {
    "kill": ["kill-random", "kill-leader"],
    "pause": ["pause-random", "pause-leader", "pause-isolate-leader"],
    "partition": ["partition-leader", "partition-halves", "partition-ring", "partition-bridge"],
    "member": list(MEMBERSHIP_NEMESES),
    "compact": list(COMPACTION_NEMESES),
    "all": list(NEMESES),
}


def expand(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for n in GROUPS.get(name, [name]):
            if n not in NEMESES:
                raise ValueError(f"unknown nemesis {n!r}; known: {', '.join([*GROUPS, *NEMESES])}")
            if n not in out:
                out.append(n)
    return out


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the start of the fault phase
    nemesis: str
    hold: float  # seconds the fault stays on
    seed: int


Schedule = list[Step]


PROCESS_FAULTS = frozenset({"kill-random", "kill-leader", "pause-random", "pause-leader", "restart", "lost-writes",
                            "clock-skew", *COMPACTION_NEMESES})  # fmt: skip
MEMBERSHIP_FAULTS = frozenset(MEMBERSHIP_NEMESES)
MEMBERSHIP_QUIET = (1.0, 4.0)
MEMBERSHIP_HOLD = (5.0, 12.0)


def uses_membership(names: list[str]) -> bool:
    return any(n in MEMBERSHIP_FAULTS for n in names)


def uses_compaction(names: list[str]) -> bool:
    return any(n in COMPACTION_NEMESES for n in names)


def make_schedule(rng: random.Random, names: list[str], duration: float, quiet: tuple[float, float] = (2.0, 5.0),
                  hold: tuple[float, float] = (3.0, 8.0), overlap: bool = False) -> Schedule:  # fmt: skip
    """Faults one at a time: a quiet gap, then a fault held for a while, until `duration` is used up. With
    `overlap`, process faults and the others (network, transfers) follow two such sequences of their own, so
    that one of each may be active at once. Membership changes always follow a sequence of their own (drawn
    last, so a schedule without them is what it always was): a node stays removed, or the spare added,
    while the other faults come and go, and two membership changes never overlap."""
    member = [n for n in names if n in MEMBERSHIP_FAULTS]
    names = [n for n in names if n not in MEMBERSHIP_FAULTS]
    if not overlap:
        steps = _sequence(rng, names, duration, quiet, hold)
    else:
        process = [n for n in names if n in PROCESS_FAULTS]
        other = [n for n in names if n not in PROCESS_FAULTS]
        steps = _sequence(rng, process, duration, quiet, hold) + _sequence(rng, other, duration, quiet, hold)
    if member:
        steps += _sequence(rng, member, duration, MEMBERSHIP_QUIET, MEMBERSHIP_HOLD)
    return sorted(steps, key=lambda s: s.at)


def _sequence(rng: random.Random, names: list[str], duration: float, quiet: tuple[float, float],
              hold: tuple[float, float]) -> Schedule:  # fmt: skip
    steps: Schedule = []
    t = rng.uniform(*quiet)
    while names and t < duration:
        h = min(rng.uniform(*hold), max(0.5, duration - t))
        steps.append(Step(round(t, 3), rng.choice(names), round(h, 3), rng.randrange(2**32)))
        t += h + rng.uniform(*quiet)
    return steps


def stop_storms() -> None:
    for key in list(_storms):
        _storms.pop(key).stop.set()


def heal_everything(cluster: Cluster) -> None:
    """Undo every fault: stop storms, heal the network, resume paused nodes, restart dead or skewed ones
    (those meant to run: not a spare that was never added or was removed and stopped)."""
    stop_storms()
    cluster.heal_network()
    for node in list(cluster.paused):
        cluster.resume(node)
    for node in cluster.ids:
        if node in cluster.clock:
            cluster.kill(node, signal.SIGKILL)
        if node in cluster.should_run and not cluster.running(node):
            cluster.procs.pop(node, None)
            cluster.start(node)
