"""Process groups for the end-to-end benchmark: a dledger group and a PySyncObj group on loopback.

Both start N OS processes with fresh stores under a scratch directory, find the leader, run load, kill and
restart members, and report each member's peak RSS (`VmHWM`). Every wait is bounded by a deadline, and
`stop()` always reaps every process it started (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

from dledger.client.client import DLedgerClient, NodeInfo
from dledger.node.config import format_peers
from dledger.node.tuning import MMAP_THRESHOLD, TRIM_THRESHOLD
from dledger.testing.launcher import ensure_peer_secret, free_port_pairs, free_ports

ROOT = pathlib.Path(__file__).resolve().parents[1]
GROUP = "bench"
T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float, what: str, poll: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(poll)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _env() -> dict[str, str]:
    """Every process of both systems (nodes, PySyncObj peers, load clients) runs with the malloc thresholds
    that `dledger node` sets for itself (`dledger.node.tuning`), so neither side has an allocator
    the other lacks."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }


def _reap(procs: Sequence[subprocess.Popen[Any]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class DledgerGroup:
    """`python -m dledger node` processes; `flush` is "async" or "sync"."""

    name = "dledger"

    def __init__(
        self, root: pathlib.Path, nodes: int, flush: str, *, embedded: bool = False, peer_transport: str = "grpc"
    ) -> None:
        """`embedded`: run `bench.embedded_node` (the same node plus a control pipe) so that `embedded_load`
        can drive appends from inside the leader's process, as PySyncObj's load runs. `peer_transport`: the
        nodes' `--peer-transport` (with tcp each node's port + 1000 must be free too)."""
        self.root = root
        self.flush = flush
        self.embedded = embedded
        self.controls: dict[str, _Peer] = {}
        ids = [f"n{k}" for k in range(nodes)]
        self.peer_transport = peer_transport
        ports = free_ports(nodes) if peer_transport == "grpc" else free_port_pairs(nodes, 1000)
        self.peers = {i: f"127.0.0.1:{p}" for i, p in zip(ids, ports, strict=True)}
        self.peers_text = format_peers(self.peers)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rss_mb: dict[str, float] = {}
        self._client: DLedgerClient | None = None

    def start(self, node_id: str | None = None) -> None:
        for i in [node_id] if node_id else list(self.peers):
            with open(self.root / f"{i}.log", "ab") as log:
                cmd = [
                    sys.executable,
                    "-m",
                    *(["bench.embedded_node"] if self.embedded else ["dledger", "node"]),
                    "--group",
                    GROUP,
                    "--id",
                    i,
                    "--peers",
                    self.peers_text,
                    "--store-dir",
                    str(self.root / i),
                    "--flush",
                    self.flush,
                    "--log-level",
                    "warning",
                    "--peer-secret-file",
                    str(ensure_peer_secret(self.root)),
                    "--peer-transport",
                    self.peer_transport,
                ]
                if self.embedded:
                    self.controls[i] = _Peer(cmd, log)
                    self.procs[i] = self.controls[i].proc
                else:
                    self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
        for i in [node_id] if node_id else list(self.peers):
            if self.embedded:
                self.controls[i].wait_started()

    def client(self) -> DLedgerClient:
        if self._client is None:
            self._client = DLedgerClient(self.peers, group=GROUP, timeout=2.0, rpc_timeout=0.5)
        return self._client

    def statuses(self) -> dict[str, NodeInfo]:
        return {s.id: s for s in self.client().status(timeout=0.3) if s.reachable}

    def leader(self) -> str | None:
        infos = [s for s in self.statuses().values() if s.id in self.procs]
        leaders = {s.id for s in infos if s.role == "leader"}
        if len(leaders) != 1:
            return None
        (lead,) = leaders
        return lead if all(s.leader_id == lead for s in infos) else None

    def wait_ready(self, timeout: float = 30.0) -> str:
        def ok() -> str | None:
            lead = self.leader()
            if lead is None or len(self.statuses()) < len(self.procs):
                return None
            return lead

        return wait_until(ok, timeout, "a leader known to every live node", poll=0.05)

    def term(self) -> int:
        return max((s.term for s in self.statuses().values()), default=0)

    def kill(self, node_id: str) -> None:
        control = self.controls.pop(node_id, None)
        proc = self.procs.pop(node_id)
        self.rss_mb[node_id] = max(self.rss_mb.get(node_id, 0.0), peak_rss_mb(proc.pid))
        proc.kill()
        proc.wait(timeout=10)
        if control is not None:
            control.quit(timeout=0)  # closes its pipes

    def sample_rss(self) -> dict[str, float]:
        for i, proc in self.procs.items():
            self.rss_mb[i] = max(self.rss_mb.get(i, 0.0), peak_rss_mb(proc.pid))
        return dict(self.rss_mb)

    def load_cmd(
        self, payload: int, batch: int, inflight: int, seconds: float, max_ops: int, start_at: float
    ) -> list[str]:
        return [*self._load_cmd(payload, batch, inflight, seconds, max_ops, start_at), *self.load_flags]

    load_flags: tuple[str, ...] = ()  # extra flags for bench.e2e_load (e.g. --unary)

    def _load_cmd(
        self, payload: int, batch: int, inflight: int, seconds: float, max_ops: int, start_at: float
    ) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.e2e_load",
            "--peers",
            self.peers_text,
            "--group",
            GROUP,
            "--payload",
            str(payload),
            "--batch",
            str(batch),
            "--inflight",
            str(inflight),
            "--seconds",
            str(seconds),
            "--max-ops",
            str(max_ops),
            "--start-at",
            str(start_at),
        ]

    def load(
        self, payload: int, batch: int, inflight: int, seconds: float, max_ops: int, clients: int = 1
    ) -> dict[str, Any]:
        """Run `clients` client processes at once; merge their reports."""
        start_at = time.monotonic() + 1.5  # time for the clients to import, connect and find the leader
        per = max(1, inflight // clients)
        cpu0 = {i: cpu_seconds(p.pid) for i, p in self.procs.items()}
        procs = [
            subprocess.Popen(
                self.load_cmd(payload, batch, per, seconds, max(1, max_ops // clients), start_at),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
                env=_env(),
            )
            for _ in range(clients)
        ]
        reports = []
        try:
            for proc in procs:
                out, err = proc.communicate(timeout=seconds + 30)
                if proc.returncode != 0 or not out.strip():
                    raise RuntimeError(f"load client failed ({proc.returncode}): {err.decode()[-2000:]}")
                reports.append(json.loads(out.decode().strip().splitlines()[-1]))
        finally:
            _reap(procs)
        leader = self.leader()
        cpu = {i: cpu_seconds(p.pid) - cpu0.get(i, 0.0) for i, p in self.procs.items()}
        return {
            "cpu_s": {
                "leader": cpu.get(leader or "", 0.0),
                "followers": sum(v for i, v in cpu.items() if i != leader),
                "clients": sum(r.get("cpu_s", 0.0) for r in reports),
            },
            "entries": sum(r["entries"] for r in reports),
            "errors": sum(r["errors"] for r in reports),
            "error_kinds": [r["error_kinds"] for r in reports],
            "seconds": max(r["seconds"] for r in reports),
            "lat_ms": [x for r in reports for x in r["lat_ms"]],
        }

    def embedded_load(self, payload: int, max_ops: int, seconds: float = 60.0) -> dict[str, Any]:
        """`max_ops` synchronous appends of one entry from inside the leader's process (`embedded=True`)."""
        lead = self.wait_ready(15.0)
        req = {"cmd": "load", "payload": payload, "max_ops": max_ops, "seconds": seconds}
        r = self.controls[lead].ask(req, timeout=seconds + 30)
        if "error" in r:
            raise RuntimeError(f"embedded load on {lead} failed: {r['error']}")
        return r

    def stop(self) -> None:
        self.sample_rss()
        if self._client is not None:
            self._client.close()
            self._client = None
        for control in self.controls.values():
            control.quit()
        self.controls.clear()
        procs = list(self.procs.values())
        self.procs.clear()
        _reap(procs)


class _Peer:
    """One process with a line-based JSON control pipe: a PySyncObj peer, or an embedded dledger node."""

    def __init__(self, cmd: list[str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=_env(), bufsize=0
        )
        self._buf = b""
        self.ask_timeout = 30.0

    def _readline(self, timeout: float) -> bytes:
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("peer did not answer")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout.fileno(), 1 << 20)
                if not chunk:
                    raise EOFError("peer exited")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def wait_started(self, timeout: float = 30.0) -> None:
        json.loads(self._readline(timeout))

    def send(self, request: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write((json.dumps(request) + "\n").encode())

    def receive(self, timeout: float) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self._readline(timeout))
        return reply

    def ask(self, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        self.send(request)
        return self.receive(timeout)

    def quit(self, timeout: float = 5.0) -> None:
        """Ask the process to stop and close the pipes; the caller reaps what is still running."""
        try:
            self.send({"cmd": "quit"})
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class PysyncobjGroup:
    """`python -m bench.pysyncobj_peer` processes: memory journal (async) or flushed file journal (sync)."""

    name = "pysyncobj"

    def __init__(self, root: pathlib.Path, nodes: int, flush: str, profile: str) -> None:
        self.root = root
        self.flush = flush
        self.profile = profile
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(nodes)]
        self.peers: dict[str, _Peer] = {}
        self.rss_mb: dict[str, float] = {}

    def start(self, addr: str | None = None) -> None:
        for a in [addr] if addr else self.addrs:
            others = ",".join(x for x in self.addrs if x != a)
            cmd = [
                sys.executable,
                "-m",
                "bench.pysyncobj_peer",
                "--self",
                a,
                "--partners",
                others,
                "--profile",
                self.profile,
            ]
            if self.flush == "sync":
                journal = self.root / f"journal-{a.replace(':', '_')}"
                for suffix in ("", ".meta"):  # a restarted peer starts empty, like a memory journal
                    pathlib.Path(f"{journal}{suffix}").unlink(missing_ok=True)
                cmd += ["--journal", str(journal)]
            with open(self.root / f"pso-{a.replace(':', '_')}.log", "ab") as log:
                self.peers[a] = _Peer(cmd, log)
        for a in [addr] if addr else self.addrs:
            self.peers[a].wait_started()

    def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for a, peer in self.peers.items():
            try:
                out[a] = peer.ask({"cmd": "status"}, timeout=5.0)
            except (TimeoutError, EOFError, OSError):
                continue
        return out

    def leader(self) -> str | None:
        st = self.statuses()
        leaders = [a for a, s in st.items() if s.get("state") == 2]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        return lead if all(s.get("leader") == lead for s in st.values()) else None

    def wait_ready(self, timeout: float = 30.0) -> str:
        return wait_until(self.leader, timeout, "a PySyncObj leader known to every peer", poll=0.05)

    def term(self) -> int:
        return max((int(s.get("term", 0)) for s in self.statuses().values()), default=0)

    def kill(self, addr: str) -> None:
        peer = self.peers.pop(addr)
        self.rss_mb[addr] = max(self.rss_mb.get(addr, 0.0), peak_rss_mb(peer.proc.pid))
        peer.proc.kill()
        peer.proc.wait(timeout=10)

    def sample_rss(self) -> dict[str, float]:
        for a, peer in self.peers.items():
            self.rss_mb[a] = max(self.rss_mb.get(a, 0.0), peak_rss_mb(peer.proc.pid))
        return dict(self.rss_mb)

    def load(
        self, payload: int, batch: int, inflight: int, seconds: float, max_ops: int, clients: int = 1
    ) -> dict[str, Any]:
        lead = self.wait_ready(15.0)
        req = {
            "cmd": "load",
            "payload": payload,
            "batch": batch,
            "inflight": inflight,
            "seconds": seconds,
            "max_ops": max_ops,
        }
        cpu0 = {a: cpu_seconds(p.proc.pid) for a, p in self.peers.items()}
        r = self.peers[lead].ask(req, timeout=seconds + 60)
        if "error" in r:
            raise RuntimeError(f"PySyncObj load failed: {r['error']}")
        cpu = {a: cpu_seconds(p.proc.pid) - cpu0.get(a, 0.0) for a, p in self.peers.items()}
        return {
            "cpu_s": {
                "leader": cpu.get(lead, 0.0),
                "followers": sum(v for a, v in cpu.items() if a != lead),
                "clients": 0.0,
            },
            "entries": r["entries"],
            "errors": r["errors"],
            "error_kinds": [],
            "seconds": r["seconds"],
            "lat_ms": r["lat_ms"],
        }

    def stop(self) -> None:
        self.sample_rss()
        peers = list(self.peers.values())
        self.peers.clear()
        for peer in peers:
            try:
                peer.send({"cmd": "quit"})
            except OSError:
                pass
        _reap([p.proc for p in peers])
