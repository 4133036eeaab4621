"""`dledger cluster` (detached, status --cluster, stop), `dledger demo`, and the launcher's safety checks."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from dledger.node.config import ConfigError
from dledger.testing.launcher import STATE_FILE, is_our_node, load_state, stop_detached
from tests.support import ROOT, run_dledger, wait_for

pytestmark = pytest.mark.process


def test_detached_cluster_status_and_stop(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "c"
    out = run_dledger("cluster", "--nodes", "3", "--store-dir", str(root), "--detach", "--group", "g1")
    assert out.returncode == 0, out.stderr
    group, peers, pids = load_state(root)
    assert group == "g1" and list(peers) == ["n0", "n1", "n2"] and len(pids) == 3
    try:
        assert all(is_our_node(pid, root.resolve()) for pid in pids.values())

        def one_leader() -> bool:
            status = run_dledger("status", "--cluster", str(root), "--json")
            nodes = json.loads(status.stdout) if status.returncode == 0 else []
            return sorted(n["role"] for n in nodes) == ["follower", "follower", "leader"]

        leader = out.stdout.strip().splitlines()[-1]
        assert leader.startswith("leader: n"), out.stdout  # it returns once the group has elected
        status = json.loads(run_dledger("status", "--cluster", str(root), "--json").stdout)
        assert [n["role"] for n in status if n["id"] == leader.removeprefix("leader: ")] == ["leader"]
        wait_for(one_leader, 30, "a leader in the detached cluster", poll=0.2)
        appended = run_dledger("append", "--cluster", str(root), "x")
        assert appended.returncode == 0, appended.stderr
    finally:
        stopped = run_dledger("cluster", "stop", str(root))
    assert stopped.returncode == 0 and "n0" in stopped.stdout
    assert not (root / STATE_FILE).exists()
    wait_for(lambda: not any(is_our_node(pid, root.resolve()) for pid in pids.values()), 15, "nodes gone")


def test_stop_leaves_foreign_pids_alone(tmp_path: pathlib.Path) -> None:
    state = {"group": "g", "peers": "n0-127.0.0.1:1", "pids": {"n0": os.getpid()}}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    assert stop_detached(tmp_path) == []  # our own pytest process is not a dledger node of that root


@pytest.mark.parametrize("content", ["not json", json.dumps({"group": "g"}), json.dumps([1, 2])])
def test_bad_state_file_is_a_clear_error(tmp_path: pathlib.Path, content: str) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(ConfigError, match="cluster state file"):
        load_state(tmp_path)
    out = run_dledger("status", "--cluster", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_cluster_stop_without_a_cluster(tmp_path: pathlib.Path) -> None:
    out = run_dledger("cluster", "stop", str(tmp_path))
    assert out.returncode == 2 and "no local cluster" in out.stderr


def test_demo_runs_end_to_end(tmp_path: pathlib.Path) -> None:
    out = run_dledger("demo", "--entries", "300", "--keep", str(tmp_path / "demo"), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no acknowledged entry lost" in out.stdout
    assert "replicas hold the same" in out.stdout


def test_starting_again_on_a_running_group_is_refused(tmp_path: pathlib.Path) -> None:
    """A second `cluster --detach` on the same dir must not overwrite the state file of the running group
    (its own nodes would die on the stores in use, and `cluster stop` would then stop nothing)."""
    root = tmp_path / "c"
    first = run_dledger("cluster", "--nodes", "2", "--store-dir", str(root), "--detach")
    assert first.returncode == 0, first.stderr
    state = (root / STATE_FILE).read_text()
    _, _, pids = load_state(root)
    try:
        again = run_dledger("cluster", "--nodes", "2", "--store-dir", str(root), "--detach")
        assert again.returncode != 0
        lines = again.stderr.splitlines()
        assert len(lines) == 1 and "already runs" in lines[0] and "n0" in lines[0], again.stderr
        assert "started" not in again.stdout
        assert (root / STATE_FILE).read_text() == state
    finally:
        stopped = run_dledger("cluster", "stop", str(root))
    assert stopped.returncode == 0 and "n0, n1" in stopped.stdout
    wait_for(lambda: not any(is_our_node(pid, root.resolve()) for pid in pids.values()), 15, "nodes gone")


def test_sigterm_to_a_foreground_cluster_stops_its_nodes(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "c"
    launcher = subprocess.Popen([sys.executable, "-m", "dledger", "cluster", "--nodes", "2", "--store-dir", str(root)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    pids: dict[str, int] = {}
    try:

        def both_started() -> bool:
            nonlocal pids
            if not (root / STATE_FILE).exists():
                return False
            pids = load_state(root)[2]
            return len(pids) == 2 and all(is_our_node(pid, root.resolve()) for pid in pids.values())

        wait_for(both_started, 30, "both nodes started", poll=0.1)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(30)
        wait_for(lambda: not any(is_our_node(pid, root.resolve()) for pid in pids.values()), 30, "nodes stopped")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in pids.values():
            if is_our_node(pid, root.resolve()):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(importlib.util.find_spec("rocketmq") is None, reason="needs the dledger[rocketmq] extra")
def test_broker_cluster_detaches_and_stops(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "b"
    out = run_dledger(
        "cluster", "--broker", "--nodes", "1", "--store-dir", str(root), "--detach", "--group", "broker-a"
    )
    assert out.returncode == 0, out.stderr
    group, _, pids = load_state(root)
    assert group == "broker-a" and list(pids) == ["n0"]
    try:
        assert is_our_node(pids["n0"], root.resolve())

        def leads() -> bool:  # the state file's peers are the replicas' dLedger nodes
            status = run_dledger("status", "--cluster", str(root), "--json")
            return status.returncode == 0 and json.loads(status.stdout)[0]["role"] == "leader"

        wait_for(leads, 30, "the replica leading", poll=0.2)
    finally:
        stopped = run_dledger("cluster", "stop", str(root))
    assert stopped.returncode == 0 and "n0" in stopped.stdout, stopped.stdout + stopped.stderr
    wait_for(lambda: not is_our_node(pids["n0"], root.resolve()), 15, "replica gone")


def test_detached_start_reports_a_node_that_exits(tmp_path: pathlib.Path) -> None:
    """A node that cannot start (its port is taken) is reported with its reason, not "started 3 nodes", and
    the others are stopped."""
    root = tmp_path / "c"
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        out = run_dledger("cluster", "--nodes", "2", "--store-dir", str(root), "--base-port", str(port), "--detach")
    assert out.returncode == 1 and "started" not in out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and f"n0 exited: dledger node: cannot listen on 127.0.0.1:{port}" in lines[0], out.stderr
    assert load_state(root)[2] == {}  # n1 was stopped
