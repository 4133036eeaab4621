"""`dledger cluster --broker --groups 2 --detach`: a NameServer and two broker groups of three replicas, each
registering with it (every group with its own master, id 0); `dledger cluster stop DIR` stops every process."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from bench.namesrv_flip import eventually
from dledger.cli.broker_groups import cluster_info

pytestmark = pytest.mark.process  # starts processes

pytest.importorskip("rocketmq")


def _dledger(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dledger", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return pathlib.Path(f"/proc/{pid}").exists() and "Z" not in pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_two_groups_register_with_one_name_server_and_stop_together(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "c"
    started = _dledger("cluster", "--broker", "--groups", "2", "--detach", "--store-dir", str(root))
    try:
        assert started.returncode == 0, started.stderr
        assert "namesrvAddr=127.0.0.1:" in started.stdout and "broker-b" in started.stdout
        state = json.loads((root / "groups.json").read_text())
        assert state["groups"] == ["broker-a", "broker-b"]
        namesrv = f"127.0.0.1:{state['namesrv']['port']}"

        def both_groups_with_masters() -> dict[str, object] | None:
            info = cluster_info(namesrv)
            if info is None:
                return None
            table = info["brokerAddrTable"]
            assert isinstance(table, dict)
            full = all(
                name in table and len(table[name]["brokerAddrs"]) == 3 and "0" in table[name]["brokerAddrs"]
                for name in ("broker-a", "broker-b")
            )
            return info if full else None

        info = eventually("both groups registered with a master each", both_groups_with_masters, 120)
        assert info["clusterAddrTable"] == {"DefaultCluster": ["broker-a", "broker-b"]}
        pids = [
            *json.loads((root / "broker-a" / "cluster.json").read_text())["pids"].values(),
            *json.loads((root / "broker-b" / "cluster.json").read_text())["pids"].values(),
            state["namesrv"]["pid"],
        ]
        assert len(pids) == 7 and all(_alive(p) for p in pids)
        status = _dledger("status", "--cluster", str(root), "--json")
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert sorted(shown["groups"]) == ["broker-a", "broker-b"] and not shown["namesrv_error"]
        for name, nodes in shown["groups"].items():
            assert len(nodes) == 3 and all(n["reachable"] for n in nodes), (name, nodes)
            leader = {n["leader_id"] for n in nodes} - {None, ""}
            assert len(leader) == 1, (name, nodes)
        masters = {(r["brokerName"], r["brokerId"]) for r in shown["namesrv"]}
        assert {("broker-a", 0), ("broker-b", 0)} <= masters, shown["namesrv"]
        table = _dledger("status", "--cluster", str(root))
        assert table.returncode == 0 and all(f"broker group {n}" in table.stdout for n in ("broker-a", "broker-b"))
        again = _dledger("cluster", "--broker", "--groups", "2", "--detach", "--store-dir", str(root))
        assert again.returncode == 1 and "already runs" in again.stderr
    finally:
        stopped = _dledger("cluster", "stop", str(root))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("broker-") == 6 and "namesrv" in stopped.stdout
    eventually("every process gone", lambda: not any(_alive(p) for p in pids), 30)
