"""`python -m jepsen_like cleanup`: what an interrupted run left behind is removed, a live run is left alone."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

from jepsen_like import netns, procutil
from jepsen_like.netns import NetnsNetwork, cleanup_all, netns_supported
from jepsen_like.procutil import RunState

pytestmark = pytest.mark.process


@pytest.fixture(autouse=True)
def state_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    d = tmp_path / "state"
    monkeypatch.setattr(procutil, "STATE_DIR", d)
    monkeypatch.setattr(netns, "STATE_DIR", d)
    return d


def _fake_node() -> subprocess.Popen[bytes]:
    # argv names `dledger node`, as a real node's does, so that cleanup recognises it as ours; its cmdline
    # can still read empty just after Popen returns (seen with a big parent: the whole suite imported)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "dledger", "node"])
    deadline = time.monotonic() + 10
    while b"dledger" not in pathlib.Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


def _wait_dead(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait(timeout=10)


def test_cleanup_kills_recorded_processes_of_a_dead_run(state_dir: pathlib.Path) -> None:
    proc = _fake_node()
    try:
        state = RunState("t001")
        state.add("pids", proc.pid)
        state.data["owner"] = 999_999_999  # a controller that no longer exists
        state.save()
        done = cleanup_all()
        assert _wait_dead(proc) == -9
        assert done and not state.path.exists()
    finally:
        proc.kill()


def test_cleanup_leaves_a_running_campaign_alone(state_dir: pathlib.Path) -> None:
    proc = _fake_node()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "jepsen_like"])
    try:
        state = RunState("t002")
        state.add("pids", proc.pid)
        state.data["owner"] = owner.pid
        state.save()
        deadline = time.monotonic() + 10
        while b"jepsen_like" not in pathlib.Path(f"/proc/{owner.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
        assert "still going" in cleanup_all()[0]
        assert proc.poll() is None and state.path.exists()
        cleanup_all(force=True)
        assert _wait_dead(proc) == -9
    finally:
        proc.kill()
        owner.kill()
        owner.wait()


def test_cleanup_never_kills_a_process_that_is_not_ours(state_dir: pathlib.Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        state = RunState("t003")
        state.add("pids", other.pid)
        state.data["owner"] = 999_999_999
        state.save()
        cleanup_all()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.root
@pytest.mark.skipif(netns_supported() is not None, reason=f"network namespaces: {netns_supported()}")
def test_cleanup_removes_namespaces_and_links_of_an_interrupted_run(state_dir: pathlib.Path) -> None:
    state = RunState(f"c{os.getpid() % 4096:03x}")
    net = NetnsNetwork(["n0", "n1"], state)
    net.setup()
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert net.netns("n0") in listed and net.netns("n1") in listed
        net.partition({frozenset(("n0", "n1"))})
        rules = subprocess.run([*net.exec_prefix("n0"), "nft", "list", "table", "inet", "jepsen"],
                               capture_output=True, text=True).stdout  # fmt: skip
        assert net.ip("n1") in rules and "drop" in rules
        state.data["owner"] = 999_999_999  # the controller "died" here
        state.save()
        cleanup_all()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        assert net.netns("n0") not in listed and net.bridge not in links and f"jl{state.tag}v0" not in links
    finally:
        net.teardown()
