"""Run `dledger node` as real OS processes for tests: start, SIGKILL, restart, and wait on conditions."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dledger.server.client import DLedgerClient, NodeInfo
from dledger.server.config import format_peers
from tests.server.cluster_util import peers_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float = 15.0, what: str = "condition", poll: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(poll)


class ProcessGroup:
    """A group of `python -m dledger node` processes with stores under `root`."""

    def __init__(self, root: pathlib.Path, ids: Sequence[str] = ("n0", "n1", "n2"), flush: str = "async") -> None:
        self.root = root
        self.peers = peers_for(ids)
        self.flush = flush
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node_id: str, *extra: str) -> None:
        log = open(self.root / f"{node_id}.log", "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "dledger", "node", "--group", "t", "--id", node_id,
               "--peers", format_peers(self.peers), "--store-dir", str(self.root / node_id),
               "--flush", self.flush, *extra]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs[node_id] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def start_all(self) -> None:
        for node_id in self.peers:
            self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(node_id)
        proc.send_signal(sig)
        return proc.wait(timeout=15)

    def stop_all(self) -> None:
        for node_id in list(self.procs):
            proc = self.procs[node_id]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node_id in list(self.procs):
            try:
                self.procs.pop(node_id).wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def client(self, **kwargs: Any) -> DLedgerClient:
        return DLedgerClient(self.peers, group="t", **kwargs)

    def statuses(self) -> dict[str, NodeInfo]:
        with self.client() as client:
            return {s.id: s for s in client.status(timeout=0.5)}

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        live = set(among or self.procs)
        infos = [s for s in self.statuses().values() if s.reachable and s.id in live]
        leaders = {s.id for s in infos if s.role == "leader"}
        return next(iter(leaders)) if len(leaders) == 1 else None

    def wait_for_leader(self, timeout: float = 20.0) -> str:
        return wait_until(self.leader, timeout, "a single leader", poll=0.05)

    def log_text(self, node_id: str) -> str:
        return (self.root / f"{node_id}.log").read_text(errors="replace")
