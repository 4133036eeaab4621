"""`dledger cluster --broker --groups N`: a local RocketMQ cluster, one NameServer and N broker groups.

Each group is a `LocalBrokerGroup` of replica processes (`broker-a`, `broker-b`, ... each its own dLedger
group and `brokerName`) under `<root>/<name>/`, every replica registering with the NameServer (a
`dledger namesrv` process, log in `<root>/namesrv.log`) at its own `listenPort`. `<root>/groups.json` names
the groups and the NameServer's pid and port, so `dledger cluster stop DIR` stops them all.

Invariants: a group that fails to start stops everything started so far (exit 1); the foreground run stops
every process on Ctrl-C / SIGTERM and returns 1 as soon as any of them exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from dledger.cli.broker import LocalBrokerGroup
from dledger.node.config import ConfigError
from dledger.rocketmq.remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode, fastjson, invoke
from dledger.testing.launcher import (
    READY_TIMEOUT_S,
    ClusterRunningError,
    free_ports,
    log_sizes,
    refuse_if_running,
    stop_detached,
    stop_on_terminate,
    wait_ready,
)

__all__ = [
    "GROUPS_FILE", "LocalBrokerCluster", "RegisteringGroup", "cluster_info", "groups_of", "run_local_groups",
    "stop_groups",
]  # fmt: skip

GROUPS_FILE = "groups.json"
DEFAULT_CLUSTER = "DefaultCluster"


class RegisteringGroup(LocalBrokerGroup):
    """A local broker group whose replicas register with NameServers, each at its own listenPort."""

    listen_ports: dict[str, int]

    @classmethod
    def with_namesrv(
        cls,
        root: pathlib.Path,
        namesrv: str,
        *,
        period_ms: int = 30_000,
        cluster: str = DEFAULT_CLUSTER,
        group: str = "g1",
        extra: dict[str, str] | None = None,
    ) -> RegisteringGroup:
        keys = {"namesrvAddr": namesrv, "brokerClusterName": cluster, "registerNameServerPeriod": str(period_ms)}
        g = cls.create(root, 3, group=group, extra={**keys, **(extra or {})})
        assert isinstance(g, RegisteringGroup)
        g.listen_ports = {n: int(address.rpartition(":")[2]) for n, address in g.remoting.items()}
        return g

    def broker_addr(self, node_id: str) -> str:
        return f"127.0.0.1:{self.listen_ports[node_id]}"

    def node_of(self, broker_addr: str) -> str:
        return next(n for n in self.peers if self.broker_addr(n) == broker_addr)


def cluster_info(address: str) -> dict[str, object] | None:
    """GET_BROKER_CLUSTER_INFO from the NameServer at `address`, or None when it does not answer."""
    try:
        r = asyncio.run(invoke(address, RemotingCommand.request(RequestCode.GET_BROKER_CLUSTER_INFO), timeout=2.0))
    except RemotingError:
        return None
    if r.code != ResponseCode.SUCCESS:
        return None
    info = fastjson.loads(r.body)
    return info if isinstance(info, dict) else None


@dataclass
class LocalBrokerCluster:
    root: pathlib.Path
    namesrv_port: int
    groups: list[RegisteringGroup]
    detached: bool = False
    namesrv: subprocess.Popen[bytes] | None = field(default=None)

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        groups: int,
        *,
        flush: str = "async",
        period_ms: int = 30_000,
        extra: dict[str, str] | None = None,
    ) -> LocalBrokerCluster:
        """`extra`: more broker.conf keys for every replica."""
        if not 1 <= groups <= 9:
            raise ConfigError(f"--groups: {groups} must be between 1 and 9")
        path = pathlib.Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        port = free_ports(1)[0]
        extra = {"flushDiskType": "SYNC_FLUSH" if flush == "sync" else "ASYNC_FLUSH", **(extra or {})}
        made = [
            RegisteringGroup.with_namesrv(
                path / name, f"127.0.0.1:{port}", group=name, extra=extra, period_ms=period_ms
            )
            for name in (f"broker-{chr(ord('a') + k)}" for k in range(groups))
        ]
        return cls(path, port, made)

    @property
    def namesrv_addr(self) -> str:
        return f"127.0.0.1:{self.namesrv_port}"

    def start_namesrv(self) -> None:
        with open(self.root / "namesrv.log", "ab") as out:
            self.namesrv = subprocess.Popen(
                [sys.executable, "-m", "dledger", "namesrv", "--host", "127.0.0.1", "--port", str(self.namesrv_port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
            )
        self.save_state()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while cluster_info(self.namesrv_addr) is None:
            if self.namesrv.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"the name server did not start: see {self.root / 'namesrv.log'}")
            time.sleep(0.1)

    def start_all(self) -> dict[str, str]:
        """Start the NameServer and every replica; {replica: why} for those that did not become ready."""
        self.start_namesrv()
        offsets = {g.group: log_sizes(g.root, g.peers) for g in self.groups}
        for g in self.groups:
            g.detached = self.detached
            g.start_all()
        failed: dict[str, str] = {}
        for g in self.groups:
            for node_id, why in wait_ready(g.root, offsets[g.group], g.alive, READY_TIMEOUT_S).items():
                failed[f"{g.group}/{node_id}"] = why
        return failed

    def alive(self) -> bool:
        namesrv_up = self.namesrv is not None and self.namesrv.poll() is None
        return namesrv_up and all(g.alive(n) for g in self.groups for n in g.peers)

    def save_state(self) -> None:
        state = {
            "groups": [g.group for g in self.groups],
            "namesrv": {"pid": self.namesrv.pid if self.namesrv else None, "port": self.namesrv_port},
        }
        (self.root / GROUPS_FILE).write_text(json.dumps(state, indent=2))

    def stop_all(self) -> None:
        for g in self.groups:
            g.stop_all()
        if self.namesrv is not None and self.namesrv.poll() is None:
            self.namesrv.send_signal(signal.SIGTERM)
            try:
                self.namesrv.wait(10)
            except subprocess.TimeoutExpired:
                self.namesrv.kill()
                self.namesrv.wait()
        (self.root / GROUPS_FILE).unlink(missing_ok=True)

    def describe(self) -> str:
        lines = [f"name server {self.namesrv_addr} (RocketMQ 4.x clients: namesrvAddr={self.namesrv_addr})"]
        for g in self.groups:
            lines.append(f"broker group {g.group!r}: 3 replicas; RocketMQ 5 clients use endpoints={g.access_point!r}")
        return "\n".join(lines)


def groups_of(root: str | os.PathLike[str]) -> tuple[list[tuple[str, pathlib.Path]], str] | None:
    """`([(broker name, its group's root), ...], NameServer address)` of a cluster `run_local_groups` started
    in `root`; None when `root` holds no multi-group cluster; ConfigError when its state file is damaged."""
    path = pathlib.Path(root).resolve()
    try:
        state = json.loads((path / GROUPS_FILE).read_text())
        names, port = [str(n) for n in state["groups"]], int(state["namesrv"]["port"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path / GROUPS_FILE}: not a cluster state file ({exc})") from None
    return [(name, path / name) for name in names], f"127.0.0.1:{port}"


def stop_groups(root: str | os.PathLike[str]) -> list[str] | None:
    """Stop what `run_local_groups` left detached in `root`: the stopped replicas, or None when `root` holds
    no multi-group cluster."""
    path = pathlib.Path(root).resolve()
    try:
        state = json.loads((path / GROUPS_FILE).read_text())
        names, pid = list(state["groups"]), state["namesrv"]["pid"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path / GROUPS_FILE}: not a cluster state file ({exc})") from None
    stopped = [f"{name}/{node}" for name in names for node in stop_detached(path / str(name))]
    if isinstance(pid, int) and _is_our_namesrv(pid, state["namesrv"].get("port")):
        os.kill(pid, signal.SIGTERM)
        stopped.append("namesrv")
    (path / GROUPS_FILE).unlink(missing_ok=True)
    return stopped


def _refuse_if_running(root: pathlib.Path) -> None:
    try:
        names = json.loads((root / GROUPS_FILE).read_text())["groups"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for name in names:
        refuse_if_running(root / str(name))


def _is_our_namesrv(pid: int, port: object) -> bool:
    try:
        args = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"namesrv" in args and str(port).encode() in args


def run_local_groups(root: str, groups: int, *, flush: str = "async", detach: bool = False) -> int:
    """`dledger cluster --broker --groups N`, in the foreground until Ctrl-C or SIGTERM, or detached."""
    try:
        _refuse_if_running(pathlib.Path(root))
        c = LocalBrokerCluster.create(root, groups, flush=flush)
    except ClusterRunningError as exc:
        print(f"dledger cluster: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"dledger cluster: {exc}", file=sys.stderr)
        return 2
    c.detached = detach
    if not detach:
        stop_on_terminate()
    try:
        failed = c.start_all()
        if failed:
            c.stop_all()
            print("dledger cluster: " + "; ".join(f"{n} {why}" for n, why in failed.items()), file=sys.stderr)
            return 1
        print(c.describe())
        if detach:
            print(f"configs and logs in {c.root}\nstop: dledger cluster stop {c.root}")
            return 0
        print(f"configs and logs in {c.root} (Ctrl-C stops every process)", flush=True)
        while c.alive():
            time.sleep(0.5)
        print(f"a process exited: see the logs in {c.root}", file=sys.stderr)
        c.stop_all()
        return 1
    except OSError as exc:
        c.stop_all()
        print(f"dledger cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        c.stop_all()
        return 0
