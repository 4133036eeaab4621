"""The healed-replica comparison on real commit log stores: identical logs pass, any difference is named."""

from __future__ import annotations

import pathlib

import pytest

from dledger.commitlog import Entry, SegmentedLog
from jepsen_like.replicas import final_state, raw_digest

pytestmark = pytest.mark.process


def _store(path: pathlib.Path, datas: list[bytes], term: int = 1) -> pathlib.Path:
    with SegmentedLog.open(path, segment_bytes=4096, flush="sync") as log:  # small segments: several files
        log.append([Entry(i, term, d) for i, d in enumerate(datas, start=1)])
    return path


DATAS = [f"value-{k:04d}-".encode() * 8 for k in range(120)]


def test_identical_replicas_agree_byte_for_byte(tmp_path: pathlib.Path) -> None:
    dirs = {n: _store(tmp_path / n, DATAS) for n in ("n0", "n1", "n2")}
    assert len(list((dirs["n0"] / "data").iterdir())) > 1
    final = final_state(dirs, {n: 100 for n in dirs}, True, [])
    assert final["replica_problems"] == [] and final["common_index"] == 100
    assert [e[0] for e in final["entries"]] == list(range(1, 101)) and final["entries"][0][3] == DATAS[0].decode()
    assert len({r["digest"] for r in final["replicas"].values()}) == 1


def test_a_replica_with_a_different_committed_entry_is_named(tmp_path: pathlib.Path) -> None:
    other = list(DATAS)
    other[41] = b"X" * len(other[41])  # same length: only the bytes differ
    dirs = {"n0": _store(tmp_path / "n0", DATAS), "n1": _store(tmp_path / "n1", other)}
    problems = final_state(dirs, {"n0": 100, "n1": 100}, True, [])["replica_problems"]
    assert any("first difference at index 42" in p for p in problems)
    assert any("raw log bytes" in p for p in problems)


def test_only_the_common_committed_prefix_is_compared(tmp_path: pathlib.Path) -> None:
    other = [*DATAS[:100], *(b"uncommitted" for _ in range(20))]  # differs only past the common commit index
    dirs = {"n0": _store(tmp_path / "n0", DATAS), "n1": _store(tmp_path / "n1", other)}
    assert final_state(dirs, {"n0": 110, "n1": 100}, True, [])["replica_problems"] == []
    assert raw_digest(str(dirs["n0"]), 100) == raw_digest(str(dirs["n1"]), 100)
    assert raw_digest(str(dirs["n0"]), 101) != raw_digest(str(dirs["n1"]), 101)


def test_a_corrupt_replica_fails_verify(tmp_path: pathlib.Path) -> None:
    dirs = {n: _store(tmp_path / n, DATAS) for n in ("n0", "n1")}
    first = sorted((dirs["n1"] / "data").iterdir())[0]
    raw = bytearray(first.read_bytes())
    raw[100] ^= 0xFF  # flip a byte inside an early entry's body
    first.write_bytes(bytes(raw))
    problems = final_state(dirs, {"n0": 100, "n1": 100}, True, [])["replica_problems"]
    assert any("dledger log verify exited 1" in p for p in problems)


def test_a_replica_that_installed_a_snapshot_is_compared_on_the_range_it_holds(tmp_path: pathlib.Path) -> None:
    dirs = {"n0": _store(tmp_path / "n0", DATAS)}
    with SegmentedLog.open(tmp_path / "n1", segment_bytes=4096, flush="sync") as log:
        log.reset(60, 1)  # what installing a snapshot at index 60 does to a follower's log
        log.append([Entry(i, 1, DATAS[i - 1]) for i in range(61, 121)])
    dirs["n1"] = tmp_path / "n1"
    final = final_state(dirs, {"n0": 100, "n1": 100}, True, [])
    assert final["replica_problems"] == [] and final["first_index"] == 1
    n0, n1 = final["replicas"]["n0"], final["replicas"]["n1"]
    assert n1["first_index"] == 61 and n0["first_index"] == 1  # compared on entries 61..100 only
    with SegmentedLog.open(tmp_path / "n2", segment_bytes=4096, flush="sync") as log:
        log.reset(60, 1)
        log.append([Entry(i, 1, b"X" * 10 if i == 70 else DATAS[i - 1]) for i in range(61, 121)])
    dirs["n2"] = tmp_path / "n2"
    problems = final_state(dirs, {n: 100 for n in dirs}, True, [])["replica_problems"]
    assert problems[0] == "n2 and n0 hold different committed entries (first difference at index 70)"
    assert len(problems) == 2 and problems[1].startswith("raw log bytes from index 61 (position 0)")  # same base
