"""Start and stop a local group of `dledger node` processes (for `dledger cluster`, `dledger demo`, tests).

Also the checks that `dledger node` and `dledger broker` make before they build anything (a port in use,
an address not on this host), and `StoreInUseError`, which their start raises when another process has the
store open.

A launched group has a state file `<root>/cluster.json` (group, peers, flush, pids) so that another command
can find it (`dledger cluster stop DIR`, `dledger status --cluster DIR`). Invariants: every node keeps its
store in `<root>/<id>` and writes its log to `<root>/<id>.log`; the nodes prove a group secret to each other,
kept in `<root>/peer.secret` (made at random on first start, readable by its owner only) unless
`peer_secret=False`; `stop` only signals processes whose command line is a dledger node or broker replica
of this root (a stale pid that was reused by another program is left alone).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dledger.commitlog import StoreInUseError  # re-exported: what a node's start raises on a store in use
from dledger.node.config import ConfigError, NodeConfig, format_peers, parse_address, parse_peers
from dledger.testing.ports import free_port_pairs, free_ports  # re-exported: launchers and tests pick ports here

__all__ = [
    "READY_TIMEOUT_S",
    "SECRET_FILE",
    "STATE_FILE",
    "ClusterRunningError",
    "ClusterStartError",
    "LocalProcessGroup",
    "StoreInUseError",
    "bind_problem",
    "ensure_peer_secret",
    "free_port_pairs",
    "free_ports",
    "listen_problem",
    "load_state",
    "log_sizes",
    "refuse_if_running",
    "running_nodes",
    "stop_on_terminate",
    "wait_ready",
]

STATE_FILE = "cluster.json"
SECRET_FILE = "peer.secret"
BROKER_MODULE = "dledger.cli.broker"  # how `LocalBrokerGroup` runs a replica


READY_TIMEOUT_S = 60.0  # generous: a loaded machine starts a node in seconds
_READY = re.compile(r"^dledger (node|broker) \S+ ready", re.MULTILINE)  # what a node or replica prints


class ClusterRunningError(Exception):
    """A local group already runs in the directory a new one was to start in."""


def ensure_peer_secret(root: pathlib.Path) -> pathlib.Path:
    """`root/peer.secret`, made with a random secret (mode 0600) when it does not exist yet."""
    path = root / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


class ClusterStartError(Exception):
    """A node of a detached group did not start (the others were stopped)."""


@dataclass
class LocalProcessGroup:
    root: pathlib.Path
    peers: dict[str, str]
    group: str = "default"
    flush: str = "async"
    extra_args: Sequence[str] = ()
    detached: bool = False  # own session: the nodes outlive the launching command and its Ctrl-C
    peer_secret: bool = True  # the nodes prove `<root>/peer.secret` to each other (False: no peer authentication)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        nodes: int = 3,
        *,
        base_port: int | None = None,
        group: str = "default",
        flush: str = "async",
        host: str = "127.0.0.1",
    ) -> LocalProcessGroup:
        if not 1 <= nodes <= 9:
            raise ConfigError(f"--nodes: {nodes} must be between 1 and 9")
        ports = list(range(base_port, base_port + nodes)) if base_port else free_ports(nodes, host)
        if base_port and not 1 <= base_port <= 65535 - nodes:
            raise ConfigError(f"--base-port: {base_port} leaves no room for {nodes} ports")
        peers = {f"n{k}": f"{host}:{p}" for k, p in enumerate(ports)}
        root_path = pathlib.Path(root).resolve()
        root_path.mkdir(parents=True, exist_ok=True)
        return cls(root_path, peers, group, flush)

    # ---- processes ----
    def command(self, node_id: str) -> list[str]:
        auth = ["--peer-secret-file", str(self.root / SECRET_FILE)] if self.peer_secret else []
        return [sys.executable, "-m", "dledger", "node", "--group", self.group, "--id", node_id,
                "--peers", format_peers(self.peers), "--store-dir", str(self.root / node_id),
                "--flush", self.flush, *auth, *self.extra_args]  # fmt: skip

    def start(self, node_id: str) -> None:
        if self.peer_secret:
            ensure_peer_secret(self.root)
        with open(self.root / f"{node_id}.log", "ab") as log:
            self.procs[node_id] = subprocess.Popen(
                self.command(node_id),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
            )
        self.save_state()

    def start_all(self) -> None:
        for node_id in self.peers:
            self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int | None:
        proc = self.procs.pop(node_id, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        self.save_state()
        return code

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every node (graceful), then SIGKILL any that did not stop within `timeout`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node_id in list(self.procs):
            proc = self.procs.pop(node_id)
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.save_state()

    def alive(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    # ---- the state file ----
    def save_state(self) -> None:
        state = {
            "group": self.group,
            "peers": format_peers(self.peers),
            "flush": self.flush,
            "pids": {i: p.pid for i, p in self.procs.items() if p.poll() is None},
        }
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.root / STATE_FILE)


def load_state(root: str | os.PathLike[str]) -> tuple[str, dict[str, str], dict[str, int]]:
    """(group, peers, pids) of a group launched in `root`; ConfigError when there is none."""
    path = pathlib.Path(root) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        group, peers, pids = state["group"], parse_peers(state["peers"], key=str(path)), state["pids"]
    except FileNotFoundError:
        raise ConfigError(f"{root}: no local cluster here (no {STATE_FILE})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a cluster state file ({exc})") from None
    if not isinstance(group, str) or not isinstance(pids, dict):
        raise ConfigError(f"{path}: not a cluster state file")
    return group, peers, {str(k): int(v) for k, v in pids.items()}


def is_our_node(pid: int, root: pathlib.Path) -> bool:
    """True when `pid` runs `dledger node` with a store under `root` (Linux /proc; elsewhere: trust it)."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    args = [a.decode(errors="replace") for a in cmdline]
    dledger = ("dledger" in args and ("node" in args or "broker" in args)) or BROKER_MODULE in args
    return dledger and any(a.startswith(str(root)) for a in args)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_terminate() -> None:
    """SIGTERM and SIGHUP end a foreground group's launcher as Ctrl-C does, so that its `finally` stops every
    node: their default action would end the launcher alone and leave its nodes running."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


def bind_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on host:port right now (a probe bind, closed at once), or None."""
    try:
        socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET).close()
    except OSError as exc:  # a name that does not resolve comes as a negative (getaddrinfo) errno
        if isinstance(exc, socket.gaierror) or (exc.errno is not None and exc.errno < 0):
            return f"the host {host!r} does not resolve"
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return None


def listen_problem(config: NodeConfig) -> str | None:
    """Why this node cannot serve on its peer address or its metrics port, or None. Checked before the node
    builds anything, so a port in use leaves no store directory behind; the probe uses SO_REUSEADDR, as the
    server's own listener does, so a port held only by closing connections is not refused."""
    host, port = parse_address(config.address)
    problem = bind_problem(host, port)
    if problem:
        hint = " (is another node running there?)" if "in use" in problem else ""
        return f"cannot listen on {config.address}: {problem.lower()}{hint}"
    if config.metrics_port:  # 0: any free port
        problem = bind_problem(config.metrics_host, config.metrics_port)
        if problem:
            return f"metrics port {config.metrics_port} on {config.metrics_host}: {problem.lower()}"
    return None


def log_sizes(root: pathlib.Path, ids: Iterable[str]) -> dict[str, int]:
    """Each node's `<root>/<id>.log` size before a start (the logs are appended to across runs)."""
    return {i: (root / f"{i}.log").stat().st_size if (root / f"{i}.log").exists() else 0 for i in ids}


def wait_ready(
    root: pathlib.Path, offsets: dict[str, int], alive: Callable[[str], bool], timeout: float
) -> dict[str, str]:
    """Wait until every node has logged its ready line past `offsets`; returns the nodes that exited or did not
    get there in `timeout` seconds, each with why (the last line it logged)."""
    pending = set(offsets)
    failed: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for node_id in sorted(pending):
            with open(root / f"{node_id}.log", "rb") as f:
                f.seek(offsets[node_id])
                text = f.read().decode(errors="replace")
            if _READY.search(text):
                pending.discard(node_id)
            elif not alive(node_id) or time.monotonic() > deadline:
                lines = [line for line in text.splitlines() if line.strip()]
                last = lines[-1] if lines else "no output"
                failed[node_id] = f"{'exited' if not alive(node_id) else 'not ready'}: {last}"
                pending.discard(node_id)
        time.sleep(0.05)
    return failed


def running_nodes(root: str | os.PathLike[str]) -> list[str]:
    """The ids of the nodes of a group launched in `root` that still run ([] when none was launched there)."""
    root_path = pathlib.Path(root).resolve()
    if not (root_path / STATE_FILE).exists():
        return []
    _, _, pids = load_state(root_path)
    return [node_id for node_id, pid in pids.items() if is_our_node(pid, root_path)]


def refuse_if_running(root: str | os.PathLike[str]) -> None:
    """`ClusterRunningError` when a group launched in `root` still runs: starting another one there would
    overwrite its state file, and its nodes would find their stores in use and exit."""
    running = running_nodes(root)
    if running:
        raise ClusterRunningError(
            f"{root}: a group already runs here ({', '.join(running)}); "
            f"see `dledger status --cluster {root}`, stop it with `dledger cluster stop {root}`"
        )


def stop_detached(root: str | os.PathLike[str], timeout: float = 10.0) -> list[str]:
    """SIGTERM the nodes of a detached group, wait for them, and remove its state file; returns stopped ids."""
    root_path = pathlib.Path(root).resolve()
    _, _, pids = load_state(root_path)
    stopped = []
    for node_id, pid in pids.items():
        if is_our_node(pid, root_path):
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(node_id)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for node_id in stopped:
        pid = pids[node_id]
        while is_our_node(pid, root_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_our_node(pid, root_path):
            os.kill(pid, signal.SIGKILL)
    (root_path / STATE_FILE).unlink(missing_ok=True)
    return stopped
