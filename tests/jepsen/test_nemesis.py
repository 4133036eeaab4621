"""Nemesis building blocks without processes: partition shapes, seeded schedules, the lost-writes cut."""

from __future__ import annotations

import itertools
import json
import pathlib
import random
from typing import Any

import pytest

from jepsen_like import nemesis
from jepsen_like.nemesis import make_schedule, partition_cuts


def _sees(node: str, ids: list[str], cuts: set[frozenset[str]]) -> set[str]:
    return {o for o in ids if o == node or frozenset((node, o)) not in cuts}


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("seed", range(5))
def test_partition_shapes(n: int, seed: int) -> None:
    ids = [f"n{k}" for k in range(n)]
    majority = n // 2 + 1
    cuts, _ = partition_cuts("leader", ids, random.Random(seed), "n1")
    assert _sees("n1", ids, cuts) == {"n1"} and all(len(_sees(o, ids, cuts)) == n - 1 for o in ids if o != "n1")
    cuts, (small, big) = partition_cuts("halves", ids, random.Random(seed), None)
    assert sorted(small + big) == ids and len(big) == majority
    assert all(_sees(a, ids, cuts) == set(big) for a in big)
    cuts, _ = partition_cuts("ring", ids, random.Random(seed), None)
    assert cuts and all(len(_sees(a, ids, cuts)) >= (majority if n > 3 else 2) for a in ids)
    if n > 3:  # a majorities ring: every node sees a majority, but no two nodes see the same one
        assert len({frozenset(_sees(a, ids, cuts)) for a in ids}) == n
    cuts, (left, right) = partition_cuts("bridge", ids, random.Random(seed), None)
    middle = (set(left) & set(right)).pop()
    assert _sees(middle, ids, cuts) == set(ids)
    assert all(_sees(a, ids, cuts) == set(left) for a in left if a != middle)


def test_schedule_is_a_function_of_the_seed() -> None:
    names = nemesis.expand(["kill", "partition"])
    a = make_schedule(random.Random(42), names, 60)
    assert a == make_schedule(random.Random(42), names, 60)
    assert a != make_schedule(random.Random(43), names, 60)
    assert all(s.nemesis in names and 0 < s.at < 60 for s in a)
    assert all(x.at + x.hold < y.at for x, y in itertools.pairwise(a))  # one fault at a time


def test_expand_rejects_unknown_names() -> None:
    assert nemesis.expand(["all"]) == list(nemesis.NEMESES)
    with pytest.raises(ValueError, match="unknown nemesis"):
        nemesis.expand(["kill", "meteor"])


@pytest.fixture(autouse=True)
def no_fresh_report_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nemesis, "FRESH_REPORT_WAIT", 0.01)  # the fake node never publishes a new report


class FakeCluster:
    """Just enough of `Cluster` for the lost-writes nemesis: one running node whose store is `root`."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.ids = ["n0"]
        self.paused: set[str] = set()
        self.flush = "async"
        self.killed: list[str] = []

    def running(self, node_id: str) -> bool:
        return node_id not in self.killed

    def leader(self) -> str:
        return "n0"

    def log_dir(self, node_id: str) -> pathlib.Path:
        return self.root

    def kill(self, node_id: str, sig: int) -> None:
        self.killed.append(node_id)


def _store(root: pathlib.Path, sizes: dict[str, tuple[int, int]]) -> None:
    for sub in ("data", "index"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (data, index) in sizes.items():
        (root / "data" / name).write_bytes(b"d" * data)
        (root / "index" / name).write_bytes(b"i" * index)


def test_lost_writes_skips_itself_without_a_durable_report(tmp_path: pathlib.Path) -> None:
    _store(tmp_path, {"00000000000000000000": (100, 64)})
    fake: Any = FakeCluster(tmp_path)
    detail = nemesis.NEMESES["lost-writes"].start(fake, random.Random(1))
    assert "DURABLE" in detail["skipped"] and fake.killed == []
    assert (tmp_path / "data" / "00000000000000000000").stat().st_size == 100


def test_lost_writes_cuts_segments_back_to_the_durable_lengths(tmp_path: pathlib.Path) -> None:
    first, second = "00000000000000000000", "00000000000000001000"
    _store(tmp_path, {first: (1000, 320), second: (500, 96)})
    (tmp_path / "DURABLE").write_text(json.dumps({first: [1000, 256], second: [200, 32]}))
    fake: Any = FakeCluster(tmp_path)
    detail = nemesis.NEMESES["lost-writes"].start(fake, random.Random(1))
    assert fake.killed == ["n0"]
    sizes = {(p.parent.name, p.name): p.stat().st_size for p in tmp_path.glob("*/0*")}
    assert sizes == {("data", first): 1000, ("index", first): 256, ("data", second): 200, ("index", second): 32}
    assert detail["cut_bytes"] == {first: [0, 64], second: [300, 64]}


def test_lost_writes_under_sync_flush_cuts_only_index_files(tmp_path: pathlib.Path) -> None:
    first = "00000000000000000000"
    _store(tmp_path, {first: (1000, 320)})
    (tmp_path / "DURABLE").write_text(json.dumps({first: [600, 128]}))
    fake: Any = FakeCluster(tmp_path)
    fake.flush = "sync"
    detail = nemesis.NEMESES["lost-writes"].start(fake, random.Random(1))
    assert (tmp_path / "data" / first).stat().st_size == 1000 and (tmp_path / "index" / first).stat().st_size == 128
    assert detail["cut_bytes"] == {first: [0, 192]}


def test_overlapping_schedule_runs_one_process_fault_and_one_other_fault_at_most() -> None:
    names = nemesis.expand(["kill", "partition", "transfer-storm"])
    steps = make_schedule(random.Random(5), names, 120, overlap=True)
    for family in (nemesis.PROCESS_FAULTS, set(names) - nemesis.PROCESS_FAULTS):
        mine = [s for s in steps if s.nemesis in family]
        assert mine and all(x.at + x.hold < y.at for x, y in itertools.pairwise(mine))
    assert any(x.at < y.at < x.at + x.hold for x, y in itertools.pairwise(steps))  # some do overlap


def test_lost_writes_never_cuts_below_the_logs_flush_checkpoint(tmp_path: pathlib.Path) -> None:
    from dledger.commitlog.checkpoint import Checkpoint, CheckpointFile

    first = "00000000000000000000"
    _store(tmp_path, {first: (1000, 320)})
    (tmp_path / "DURABLE").write_text(json.dumps({first: [600, 128]}))  # an older report ...
    cp = CheckpointFile(str(tmp_path))
    cp.write(Checkpoint(0, 900, 9))  # ... than the flush checkpoint, which knows 900 bytes are fsynced
    cp.close()
    fake: Any = FakeCluster(tmp_path)
    detail = nemesis.NEMESES["lost-writes"].start(fake, random.Random(1))
    assert (tmp_path / "data" / first).stat().st_size == 900
    assert detail["cut_bytes"] == {first: [100, 192]}
