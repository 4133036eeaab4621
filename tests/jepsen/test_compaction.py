"""The compaction nemeses without processes: archiving what compaction drops (on real commit log stores), the
follower nemesis against a fake group, and the checker and replica rules for compacted logs."""

from __future__ import annotations

import json
import pathlib
import random
from typing import Any

import pytest

from dledger.client.client import NodeInfo
from dledger.commitlog import Entry, SegmentedLog
from jepsen_like import compaction, nemesis
from jepsen_like.campaign import COMPACT_PLAN, COMPACT_SHORT, LONG_PLAN, SHORT_PLAN, plans
from jepsen_like.checker import check
from jepsen_like.membership import MemberView
from jepsen_like.replicas import final_state
from jepsen_like.workload import compacted_first
from tests.jepsen.test_checker import H, final, kinds

DATAS = [f"value-{k:04d}-".encode() * 8 for k in range(120)]


class FakeNode:
    """One node's store and what its status and Compact RPC answer."""

    def __init__(self, path: pathlib.Path, applied: int) -> None:
        self.path, self.applied, self.up = path, applied, True
        with SegmentedLog.open(path, segment_bytes=4096, flush="sync") as log:
            log.append([Entry(i, 1, d) for i, d in enumerate(DATAS, start=1)])

    def first_index(self) -> int:
        with SegmentedLog.open(self.path, segment_bytes=4096, flush="sync") as log:
            return log.first_index

    def compact(self) -> tuple[int, int]:
        with SegmentedLog.open(self.path, segment_bytes=4096, flush="sync") as log:
            log.compact_before(self.applied + 1)
            return log.first_index, self.applied


class FakeClient:
    def __init__(self, node_id: str, node: FakeNode) -> None:
        self.id, self.node = node_id, node

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def status(self, timeout: float) -> list[NodeInfo]:
        n = self.node
        if not n.up:
            return [NodeInfo(self.id, "", False, error="down")]
        first = n.first_index()
        return [NodeInfo(self.id, "", True, "follower", 1, "", first, n.applied, n.applied, n.applied)]

    def compact(self, node_id: str, timeout: float) -> tuple[int, int]:
        if not self.node.up:
            raise RuntimeError("unreachable")
        return self.node.compact()


class FakeCluster:
    def __init__(self, root: pathlib.Path, applied: dict[str, int], leader: str = "n0") -> None:
        self.root, self.broker = root, False
        self.ids = sorted(applied)
        self.nodes = {n: FakeNode(root / "stores" / n / "log", a) for n, a in applied.items()}
        self.archives: dict[str, int] = {}
        self.view = MemberView(set(self.ids))
        self.paused: set[str] = set()
        self.should_run = set(self.ids)
        self.procs: dict[str, Any] = {}
        self.down: set[str] = set()
        self.cuts: set[frozenset[str]] = set()
        self.actions: list[tuple[str, str]] = []
        self._leader = leader

    def log_dir(self, node: str) -> pathlib.Path:
        return self.root / "stores" / node / "log"

    def node_client(self, node: str, **kwargs: float) -> FakeClient:
        return FakeClient(node, self.nodes[node])

    def live(self) -> list[str]:
        return [n for n in self.ids if n not in self.down]

    def running(self, node: str) -> bool:
        return node not in self.down

    def leader(self) -> str:
        return self._leader

    def kill(self, node: str, sig: int) -> None:
        self.down.add(node)
        self.nodes[node].up = False
        self.actions.append(("kill", node))

    def start(self, node: str) -> None:
        self.down.discard(node)
        self.nodes[node].up = True
        self.actions.append(("start", node))

    def partition(self, cuts: set[frozenset[str]]) -> None:
        self.cuts = set(cuts)
        if sum(self._leader in c for c in cuts) == len(self.ids) - 1:  # the others elect another leader
            self._leader = min(n for n in self.ids if n != self._leader)
        self.actions.append(("partition", ",".join(sorted({n for c in cuts for n in c}))))

    def heal_network(self) -> None:
        self.cuts = set()
        self.actions.append(("heal", ""))


def test_compaction_is_archived_and_only_entries_applied_before_it_are_kept(tmp_path: pathlib.Path) -> None:
    cluster = FakeCluster(tmp_path, {"n0": 50, "n1": 0})
    records = compaction.compact_nodes(cluster, ["n0", "n1"])  # type: ignore[arg-type]
    n0, n1 = records
    assert n0["outcome"] == "ok" and n0["before"] == 1 and n0["first_index"] > 1 and n0["segments_dropped"] >= 1
    assert n0["archive"] == "n0-1" and n0["snapshot_index"] == 50
    assert n1["outcome"] == "ok" and n1["first_index"] == 1 and "archive" not in n1  # nothing applied, nothing dropped
    assert not (tmp_path / "archive" / "n1-1").exists()
    entries, problems = compaction.archived_entries(tmp_path)
    assert problems == []
    assert [e[0] for e in entries] == list(range(1, n0["first_index"]))
    assert entries[0] == [1, 1, 0, DATAS[0].decode(), "n0-1"]
    # a second compaction archives the next dropped segments from the new base, after what the first kept
    cluster.nodes["n0"].applied = 120
    again = compaction.compact_nodes(cluster, ["n0"])[0]  # type: ignore[arg-type]
    assert again["archive"] == "n0-2" and again["before"] == n0["first_index"]
    entries, problems = compaction.archived_entries(tmp_path)
    assert problems == [] and [e[0] for e in entries] == list(range(1, again["first_index"]))
    # what was applied when the links were made bounds what is kept (here: pretend only 10 were)
    meta = tmp_path / "archive" / "n0-1" / "archive.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "applied": 10}))
    assert [e[0] for e in compaction.archived_entries(tmp_path)[0] if e[4] == "n0-1"] == list(range(1, 11))


def test_a_compaction_that_fails_is_recorded_and_leaves_no_archive(tmp_path: pathlib.Path) -> None:
    cluster = FakeCluster(tmp_path, {"n0": 100})
    cluster.nodes["n0"].up = False
    (record,) = compaction.compact_nodes(cluster, ["n0"])  # type: ignore[arg-type]
    assert record["outcome"] == "fail" and "error" in record
    assert compaction.archived_entries(tmp_path) == ([], [])


def test_compact_follower_takes_a_follower_away_compacts_the_others_then_brings_it_back(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "COMPACT_EVERY", 0.0)
    for seed in range(6):
        cluster = FakeCluster(tmp_path / str(seed), {"n0": 100, "n1": 20, "n2": 20}, leader="n0")
        start, stop = compaction.COMPACTION_NEMESES["compact-follower"]
        detail = start(cluster, random.Random(seed))  # type: ignore[arg-type]
        node = detail["node"]
        assert node in ("n1", "n2") and detail["how"] in ("kill", "cut")
        assert {r["node"] for r in detail["compactions"]} == {"n0", "n1", "n2"} - {node}  # the leader included
        assert detail["needs_snapshot"] and detail["leader_first_index"] > 21  # the leader dropped what it needs
        assert detail["last_index"] == 20
        if detail["how"] == "kill":  # cut off first (its log stops growing, then its end is read), then killed
            assert [a[0] for a in cluster.actions[:3]] == ["partition", "kill", "heal"]
            assert cluster.actions[1] == ("kill", node) and not cluster.cuts
        else:
            assert cluster.cuts == {frozenset((node, o)) for o in ("n0", "n1", "n2") if o != node}
        cluster.nodes[node].applied = 100  # it catches up (by snapshot, in a real run)
        result = stop(cluster, random.Random(seed), detail)  # type: ignore[arg-type]
        assert result["node"] == node and result["caught_up"]
        assert cluster.running(node) and not cluster.cuts


def test_compact_leader_cuts_the_leader_off_and_compacts_the_others(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "COMPACT_EVERY", 0.0)
    cluster = FakeCluster(tmp_path, {"n0": 20, "n1": 100, "n2": 100}, leader="n0")
    start, _ = compaction.COMPACTION_NEMESES["compact-leader"]
    detail = start(cluster, random.Random(1))  # type: ignore[arg-type]
    assert detail["node"] == "n0" and detail["how"] == "cut" and detail["last_index"] == 20  # its commit index
    assert cluster.cuts == {frozenset(("n0", "n1")), frozenset(("n0", "n2"))}
    assert {r["node"] for r in detail["compactions"]} == {"n1", "n2"}
    assert detail["needs_snapshot"] and detail["leader_first_index"] > 21  # the new leader n1 dropped them


def test_compaction_nemeses_are_a_group_of_process_faults() -> None:
    assert nemesis.expand(["compact"]) == ["compact-follower", "compact-leader", "compact-all"]
    assert nemesis.uses_compaction(["kill", "compact-all"]) and not nemesis.uses_compaction(nemesis.expand(["kill"]))
    assert {"compact-follower", "compact-leader", "compact-all"} <= nemesis.PROCESS_FAULTS


def test_campaign_plans_with_compaction() -> None:
    assert plans(short=True, with_broker=False, broker_only=False, compaction_only=True) == COMPACT_SHORT
    assert plans(short=False, with_broker=False, broker_only=False, compaction_only=True) == COMPACT_PLAN
    assert all(p in LONG_PLAN for p in COMPACT_PLAN) and SHORT_PLAN[-1:] == COMPACT_SHORT  # CI: one run
    assert all(nemesis.uses_compaction(nemesis.expand(p.nemeses)) for p in COMPACT_PLAN)


def test_installed_snapshots_are_read_from_the_node_log(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "n1.log"
    log.write_text("x INFO dledger.node.node: installed the leader's snapshot at index 315 (term 1)\n"
                   "x INFO dledger.node.node: snapshot taken at index 898 (term 1)\n"
                   "x INFO dledger.node.node: installed the leader's snapshot at index 3536 (term 2)\n")  # fmt: skip
    assert compaction.installed_snapshots(log) == [315, 3536]
    assert compaction.installed_snapshots(tmp_path / "none.log") == []


def test_compacted_answers_name_the_first_index() -> None:
    assert compacted_first("entry 5: index 5 is compacted (first index 812)") == 812
    assert compacted_first("entry 5: index 5 is past the last index 3") is None


# ---- the checker's rule for compacted indexes ----
def _archived(rows: dict[int, str], name: str = "n0-1") -> list[list[Any]]:
    return [[i, 1, 0, v, name] for i, v in sorted(rows.items())]


def test_acknowledged_appends_below_the_final_logs_are_checked_against_the_archive() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 2).append("a", "a-3", 3)
    f = final({3: "a-3"}, first_index=3, archived=_archived({1: "a-1", 2: "a-2"}))
    v = check(h.ops(), f)
    assert v.valid, v.anomalies
    assert v.stats["archived_entries"] == 2 and v.stats["appends_unverifiable"] == 0
    bad = final({3: "a-3"}, first_index=3, archived=_archived({1: "a-1", 2: "b-9"}))
    assert kinds(check(h.ops(), bad)) == {"divergent", "phantom", "lost-write"}
    # an archive that covers the range but lacks index 2 (it was never dropped there) leaves it unverifiable
    gap = final({3: "a-3"}, first_index=3, archived=_archived({1: "a-1"}))
    v = check(h.ops(), gap)
    assert v.valid and v.stats["appends_unverifiable"] == 1


def test_an_acknowledged_append_below_every_log_is_verified_by_a_read_or_counted_unverifiable() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 2).append("a", "a-3", 3).read("b", 3, {1: "a-1"})
    v = check(h.ops(), final({3: "a-3"}, first_index=3))
    assert v.valid and v.stats["appends_unverifiable"] == 1  # a-1 was read; a-2 nobody saw before compaction


def test_a_write_missing_where_an_archive_and_the_final_log_meet_is_lost() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 2).append("a", "a-3", 3)
    f = final({3: "x-1"}, first_index=3, archived=_archived({1: "a-1", 2: "a-2"}))
    assert "lost-write" in kinds(check(h.ops(), f))


def test_acknowledged_changes_below_the_final_logs_are_checked_in_the_archive() -> None:
    conf = json.dumps({"voters": ["n0", "n1"], "learners": []})
    change = {"op": "remove", "node": "n2", "outcome": "ok", "index": 1, "voters": ["n0", "n1"], "learners": []}
    h = H().append("a", "a-2", 2)
    archived = [[1, 1, 2, conf, "n0-1"], [2, 1, 0, "a-2", "n0-1"]]
    assert check(h.ops(), final({3: "a-2x"}, first_index=3, archived=archived), [change]).stats["changes_ok"] == 1
    v = check(h.ops(), final({}, first_index=3, archived=archived), [change])
    assert "lost-change" not in kinds(v)
    wrong = [[1, 1, 0, "a-1", "n0-1"], [2, 1, 0, "a-2", "n0-1"]]
    assert "lost-change" in kinds(check(h.ops(), final({}, first_index=3, archived=wrong), [change]))


# ---- replicas compacted alike are still compared byte for byte ----
def _compacted(path: pathlib.Path, datas: list[bytes], before: int) -> pathlib.Path:
    with SegmentedLog.open(path, segment_bytes=4096, flush="sync") as log:
        log.append([Entry(i, 1, d) for i, d in enumerate(datas, start=1)])
        log.compact_before(before)
    return path


@pytest.mark.process
def test_replicas_compacted_alike_are_compared_byte_for_byte(tmp_path: pathlib.Path) -> None:
    dirs = {n: _compacted(tmp_path / n, DATAS, 60) for n in ("n0", "n1")}
    dirs["n2"] = _compacted(tmp_path / "n2", DATAS, 1)  # not compacted: the reference
    result = final_state(dirs, {n: 100 for n in dirs}, True, [])
    assert result["replica_problems"] == [] and result["first_index"] == 1
    first = result["replicas"]["n0"]["first_index"]
    assert 1 < first <= 60 and result["replicas"]["n1"]["digest"] == result["replicas"]["n0"]["digest"]
    other = list(DATAS)
    other[99] = b"Y" * len(other[99])  # one committed byte differs past the compacted range
    dirs["n1"] = _compacted(tmp_path / "n1x", other, 60)
    problems = final_state(dirs, {n: 100 for n in dirs}, True, [])["replica_problems"]
    assert any("first difference at index 100" in p for p in problems)
    assert any(f"raw log bytes from index {first}" in p for p in problems)


@pytest.mark.process
def test_a_replica_compacted_past_its_commit_index_holds_an_empty_range(tmp_path: pathlib.Path) -> None:
    dirs = {"n0": _compacted(tmp_path / "n0", DATAS, 1)}
    with SegmentedLog.open(tmp_path / "n1", segment_bytes=4096, flush="sync") as log:
        log.reset(100, 1)  # installed a snapshot at the commit index: nothing after it yet
    dirs["n1"] = tmp_path / "n1"
    result = final_state(dirs, {n: 100 for n in dirs}, True, [])
    assert result["replica_problems"] == [] and result["replicas"]["n1"]["first_index"] == 101
