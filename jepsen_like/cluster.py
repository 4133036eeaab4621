"""`Cluster`: the real `dledger node` processes of one run, their network, and their fault primitives.

Each node runs as `python -m dledger node` (in its own network namespace as root, else on loopback behind
the link proxies of `proxy.py`), with its store under `<root>/stores/<id>` and its output in
`<root>/logs/<id>.log`. With `broker=True` each node is a `python -m dledger broker` replica instead (a node,
its message store and a RocketMQ 5 endpoint, as `dledger cluster --broker` runs them), configured by a
generated `<root>/<id>.conf`; `endpoints` are the replicas' MessagingService addresses. Only the links between
the replicas' dLedger ports go through the proxies (or are cut by nftables in netns mode, which also cuts a
follower's forwarding to the leader's endpoint). Primitives: start (optionally under libfaketime at a clock
rate), SIGKILL, SIGSTOP / SIGCONT, SIGTERM, partition / heal, status. Nodes log at INFO (role changes,
snapshots taken and installed); `segment_bytes` (compaction runs) sets `mappedFileSizeCommitLog` in their
generated config files, so that compaction has whole segments to drop.

Membership: `spares` extra process slots (after the `n` initial voters) are not members at
start; `start(node, join=True)` starts a node with `--join` on an empty store (`wipe` moves a store aside
first), with `--peers` = the group's current members (`view`, see `membership.py`) and itself. A node that
joined keeps those flags on every later restart (as its deployment's config file would), so a wiped node is
never restarted as an initial voter. `should_run` is the set of nodes meant to be running (what healing
restarts); `live()` the ones running now.

Invariants: every node pid is recorded in the run state before anything else can fail (so `cleanup` finds
it); a paused node is resumed before it is killed or stopped; a node starts with `--join` only on an empty
store; `close()` stops every node and removes the network, and is safe to call twice.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import IO, Literal

from dledger.client.client import DLedgerClient, NodeInfo
from dledger.node.config import format_peers
from dledger.testing.launcher import ensure_peer_secret, free_port_pairs
from jepsen_like.membership import MemberView
from jepsen_like.netns import NetnsNetwork
from jepsen_like.procutil import RunState
from jepsen_like.proxy import LinkProxies, free_ports

__all__ = ["BROKER_QUEUES", "FAKETIME_LIB", "GROUP", "Cluster", "NetMode"]

GROUP = "jl"
NODE_PORT = 20911
ENDPOINT_PORT = 20981  # a broker replica's MessagingService, in its namespace
BROKER_QUEUES = 4  # queues of an auto-created topic
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NetMode = Literal["netns", "proxy"]
PEER_PORT_OFFSET = 1000  # the tcp peer transport's port above each node's (dledgerPeerPortOffset)


class Cluster:
    """`n` initial voters named n0..n{n-1}, and `spares` more slots n{n}.. that are not members at start."""

    def __init__(self, root: pathlib.Path, n: int, *, flush: str, net: NetMode, state: RunState,
                 lease_read: bool = False, durable_report_ms: int = 50, broker: bool = False,
                 spares: int = 0, segment_bytes: int | None = None, peer_transport: str = "grpc") -> None:  # fmt: skip
        self.root = root
        self.broker = broker
        self.ids = [f"n{k}" for k in range(n + spares)]
        self.initial = self.ids[:n]
        self.spares = self.ids[n:]
        self.view = MemberView(set(self.initial))
        self.should_run: set[str] = set()
        self.joined: dict[str, list[str]] = {}  # node -> the member ids it was given with --join
        self.wipes: dict[str, int] = {}
        self.archives: dict[str, int] = {}  # node -> compactions archived (see compaction.py)
        self.segment_bytes = segment_bytes
        self.peer_transport = peer_transport
        offset = PEER_PORT_OFFSET if peer_transport == "tcp" else None
        n = len(self.ids)
        self.flush = flush
        self.net_mode = net
        self.state = state
        self.lease_read = lease_read
        self.durable_report_ms = durable_report_ms
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self.clock: dict[str, float] = {}
        self.netns: NetnsNetwork | None = None
        self.proxies: LinkProxies | None = None
        self.remoting_ports: dict[str, int] = {}  # node id -> listenPort (netns: the default, one per namespace)
        if net == "netns":
            self.netns = NetnsNetwork(self.ids, state)
            self.addresses = {i: f"{self.netns.ip(i)}:{NODE_PORT}" for i in self.ids}
            self.endpoints = {i: f"{self.netns.ip(i)}:{ENDPOINT_PORT}" for i in self.ids}
        else:
            ports = free_ports(2 * n) if offset is None else free_port_pairs(2 * n, offset)
            self.addresses = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports[:n], strict=True)}
            self.endpoints = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports[n:], strict=True)}
            # a broker's remoting face (4.x clients) listens on listenPort: one each on a shared host
            taken = {*ports, *(p + offset for p in ports if offset is not None)}  # (tcp peers: port + offset)
            remoting = [p for p in free_ports(3 * n) if p not in taken][:n]
            self.remoting_ports = dict(zip(self.ids, remoting, strict=True))
            self.proxies = LinkProxies(self.addresses, avoid=[*ports, *remoting], peer_port_offset=offset)
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / "stores").mkdir(parents=True, exist_ok=True)
        self._logs: dict[str, IO[bytes]] = {}

    # ---- setup ----
    def setup_network(self) -> None:
        if self.netns is not None:
            self.netns.setup()
        if self.proxies is not None:
            self.proxies.start()

    def store_dir(self, node_id: str) -> pathlib.Path:
        return self.root / "stores" / node_id

    def log_dir(self, node_id: str) -> pathlib.Path:
        """The node's commit log store (what `dledger log verify` takes)."""
        return self.store_dir(node_id) / "log"

    def peers_string(self) -> str:
        """Every slot's address (what the clients are given; they follow the membership themselves)."""
        return format_peers(self.addresses)

    def _node_peers(self, node_id: str) -> str:
        ids = self.joined.get(node_id, self.initial)
        addresses = self.proxies.peers_for(node_id) if self.proxies else self.addresses
        return format_peers({i: a for i, a in addresses.items() if i in ids or i == node_id})

    def wipe(self, node_id: str) -> pathlib.Path | None:
        """Move the (stopped) node's store aside to `<root>/wiped/<id>-<k>`: a lost disk. Returns where."""
        assert not self.running(node_id), f"{node_id} is running"
        store = self.store_dir(node_id)
        if not store.exists():
            return None
        self.wipes[node_id] = self.wipes.get(node_id, 0) + 1
        dest = self.root / "wiped" / f"{node_id}-{self.wipes[node_id]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.rename(dest)
        return dest

    def start(self, node_id: str, clock_rate: float | None = None, *, join: bool = False) -> None:
        """Start `node_id` (which must not be running); `clock_rate` runs it under libfaketime; `join`: as a
        new member on an empty store, given the current members as peers."""
        assert node_id not in self.procs, f"{node_id} is already running"
        if join:
            store = self.store_dir(node_id)
            assert not store.exists() or not any(store.iterdir()), f"{node_id} joins with a non-empty store"
            self.joined[node_id] = sorted(self.view.members() - {node_id})
        self.should_run.add(node_id)
        conf = self.root / f"{node_id}.conf"
        if self.broker:
            conf.write_text(self._broker_conf(node_id))
            cmd = [sys.executable, "-m", "dledger", "broker", "--config", str(conf), "--log-level", "warning"]
        else:
            keys = f"dledgerLeaseRead={'true' if self.lease_read else 'false'}\n"
            keys += f"dLegerPeerTransport={self.peer_transport}\ndledgerPeerPortOffset={PEER_PORT_OFFSET}\n"
            keys += f"dLegerPeerSecretFile={ensure_peer_secret(self.root)}\n"
            if self.segment_bytes:
                keys += f"mappedFileSizeCommitLog={self.segment_bytes}\n"
            conf.write_text(keys)
            cmd = [sys.executable, "-m", "dledger", "node", "--config", str(conf), "--group", GROUP, "--id", node_id,
                   "--peers", self._node_peers(node_id), "--store-dir", str(self.store_dir(node_id)),
                   "--flush", self.flush, "--log-level", "info"]  # fmt: skip
            if self.durable_report_ms:
                cmd += ["--report-durable-ms", str(self.durable_report_ms)]
            if node_id in self.joined:
                cmd.append("--join")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        if clock_rate is not None and clock_rate != 1.0:
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME=f"+0 x{clock_rate}", FAKETIME_DONT_RESET="1")
            self.clock[node_id] = clock_rate
        else:
            self.clock.pop(node_id, None)
        if self.netns is not None:
            cmd = [*self.netns.exec_prefix(node_id), *cmd]
        log = self._logs.get(node_id)
        if log is None:
            log = self._logs[node_id] = open(self.root / "logs" / f"{node_id}.log", "ab")  # noqa: SIM115
        log.write(f"=== start {node_id} at {time.monotonic_ns()} clock={clock_rate}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                                start_new_session=True)  # fmt: skip
        self.state.add("pids", proc.pid)
        self.procs[node_id] = proc

    def _broker_conf(self, node_id: str) -> str:
        """A broker.conf for replica `node_id`. Redelivery never ends in the dead-letter queue (which the
        workload does not read): `maxReconsumeTimes` is far above what a run can reach."""
        keys = {
            "brokerName": GROUP,
            "dLegerGroup": GROUP,
            "dLegerPeers": self._node_peers(node_id),
            "dLegerSelfId": node_id,
            "storePathRootDir": str(self.store_dir(node_id)),
            "flushDiskType": "SYNC_FLUSH" if self.flush == "sync" else "ASYNC_FLUSH",
            "dledgerLeaseRead": "true" if self.lease_read else "false",
            "dledgerJoin": "true" if node_id in self.joined else "false",
            "grpcEndpoints": format_peers(self.endpoints),
            "dLegerPeerSecretFile": str(ensure_peer_secret(self.root)),
            "grpcServerPort": self.endpoints[node_id].rpartition(":")[2],
            "defaultTopicQueueNums": str(BROKER_QUEUES),
            "maxReconsumeTimes": "100000",
            "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",  # consumers start with the producers
        }
        if self.peer_transport != "grpc":
            keys.update(dLegerPeerTransport=self.peer_transport, dledgerPeerPortOffset=str(PEER_PORT_OFFSET))
        if node_id in self.remoting_ports:  # one host: followers relay 4.x writes to the leader's own port
            keys["listenPort"] = str(self.remoting_ports[node_id])
            keys["remotingPeers"] = format_peers({i: f"127.0.0.1:{p}" for i, p in self.remoting_ports.items()})
        return "".join(f"{k}={v}\n" for k, v in keys.items())

    def endpoints_string(self) -> str:
        return format_peers(self.endpoints)

    def start_all(self) -> None:
        """Start the initial voters (the spares wait for a membership nemesis)."""
        for node_id in self.initial:
            self.start(node_id)

    def stop(self, node_id: str) -> int | None:
        """Stop a node for good (SIGTERM): it is no longer meant to run, and healing leaves it down."""
        self.should_run.discard(node_id)
        return self.kill(node_id, signal.SIGTERM)

    # ---- faults ----
    def running(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def send(self, node_id: str, sig: int) -> None:
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def kill(self, node_id: str, sig: int = signal.SIGKILL, timeout: float = 20.0, send: bool = True) -> int | None:
        """Send `sig` (SIGKILL by default; resumes a paused node first; `send=False`: it was sent already) and
        reap the process (SIGKILL if it has not exited within `timeout`)."""
        proc = self.procs.pop(node_id, None)
        if proc is None:
            return None
        if node_id in self.paused:
            proc.send_signal(signal.SIGCONT)
            self.paused.discard(node_id)
        if send and proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout)
        self.state.remove_pid(proc.pid)
        return code

    def pause(self, node_id: str) -> None:
        self.send(node_id, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        self.send(node_id, signal.SIGCONT)
        self.paused.discard(node_id)

    def partition(self, cuts: Iterable[frozenset[str]]) -> None:
        if self.netns is not None:
            self.netns.partition(cuts)
        elif self.proxies is not None:
            self.proxies.partition(cuts)

    def heal_network(self) -> None:
        self.partition(())

    # ---- observation ----
    def live(self) -> list[str]:
        """The nodes whose process runs (paused ones included)."""
        return [n for n in self.ids if self.running(n)]

    def client(self, **kwargs: float) -> DLedgerClient:
        """A client of the running nodes (of every slot when none runs)."""
        live = self.live()
        return DLedgerClient({n: self.addresses[n] for n in live or self.ids}, group=GROUP, **kwargs)

    def node_client(self, node_id: str, **kwargs: float) -> DLedgerClient:
        """A client of one node only."""
        return DLedgerClient({node_id: self.addresses[node_id]}, group=GROUP, **kwargs)

    def statuses(self, timeout: float = 0.5) -> dict[str, NodeInfo]:
        with self.client() as c:
            return {s.id: s for s in c.status(timeout=timeout)}

    def leader(self) -> str | None:
        """The one node that reports itself leader in the highest term seen, if exactly one does."""
        infos = [s for s in self.statuses().values() if s.reachable and s.id in self.procs and s.id not in self.paused]
        leaders = [s for s in infos if s.role == "leader"]
        if not leaders:
            return None
        top = max(s.term for s in leaders)
        best = [s.id for s in leaders if s.term == top]
        return best[0] if len(best) == 1 else None

    def wait_for_leader(self, timeout: float = 30.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        return None

    # ---- teardown ----
    def stop_all(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every node (resuming paused ones first) and wait; SIGKILL what does not stop in time."""
        for node_id in list(self.paused):
            self.resume(node_id)
        for node_id in list(self.procs):
            self.send(node_id, signal.SIGTERM)
        # a second SIGTERM would kill a node whose loop has already closed its signal handlers (exit -15)
        return {node_id: self.kill(node_id, signal.SIGTERM, timeout, send=False) for node_id in list(self.procs)}

    def close(self) -> None:
        try:
            for node_id in list(self.procs):
                self.kill(node_id)
        finally:
            if self.proxies is not None:
                self.proxies.stop()
            if self.netns is not None:
                self.netns.teardown()
            for log in self._logs.values():
                log.close()
            self._logs.clear()
