"""`dledger bench broker --groups N` runs end to end on a tiny profile: every driven group acknowledges sends,
each on its own topic and only there, the JSON holds a row per number of groups driven; bad options are one
line. No timing asserts."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("rocketmq")

pytestmark = pytest.mark.process  # starts a NameServer, broker replicas and load processes

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _dledger(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dledger", *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def test_two_groups_each_acknowledge_their_own_sends(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "groups.json"
    run = _dledger("bench", "broker", "--groups", "2", "--seconds", "1", "--rounds", "1", "--json", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert [s["groups"] for s in report["summary"]] == [1, 2]
    assert set(report["summary"][1]["per_group"]) == {"broker-a", "broker-b"}
    for k, rounds in report["rounds"].items():
        (got,) = rounds
        assert len(got["groups"]) == int(k) and got["replica_cpu_s"] > 0
        for name, r in got["groups"].items():
            assert r["acked"] > 0 and r["landed"] == {name: r["acked"]}, (name, r)
    assert all(row["replica_cpu_ms_per_msg"] > 0 and row["client_cpu_ms_per_msg"] > 0 for row in report["summary"])
    assert "arithmetic, not a measurement" in run.stdout and "msgs/s a group, x 2 = " in run.stdout


@pytest.mark.parametrize("args", [("--groups", "0"), ("--groups", "10"), ("--seconds", "0"), ("--window", "0")])
def test_bad_options_are_one_line(args: tuple[str, ...]) -> None:
    run = _dledger("bench", "broker", *args, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().count("\n") == 0 and "--groups 1..9" in run.stderr
