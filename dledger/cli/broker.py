"""`dledger broker --config broker.conf`: one replica = a dledger node + `MessageStore` + RocketMQ 5 endpoint.

This module imports grpc and the RocketMQ stubs only when a replica is built, so `add_broker_command` can be
registered by `dledger.cli.main` without the `dledger[rocketmq]` extra. `LocalBrokerGroup` (for `dledger cluster
--broker` and the tests) is a local broker group, one process per replica, each with its own generated
broker.conf under the root directory, and a `cluster.json` state file like `LocalProcessGroup`'s (so
`dledger cluster stop DIR` finds the replicas). Exit codes: 2 for a bad setting or a
missing extra, 1 for a store or port problem, 0 after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dledger.broker_adapter.admin_service import AdminService
from dledger.broker_adapter.broker_metrics import BrokerCollector
from dledger.broker_adapter.options import BROKER_KEYS, StoreOptions, with_entry_room
from dledger.broker_adapter.store import MessageStore
from dledger.node import tuning
from dledger.node.client_auth import ClientGrants
from dledger.node.config import ConfigError, NodeConfig, format_peers, load_properties, parse_address
from dledger.node.server import DLedgerServer
from dledger.node.tuning import tune_gc, tune_malloc
from dledger.rocketmq.broker.config import REMOTING_KEYS, RemotingConfig
from dledger.rocketmq.broker.face import RemotingBroker
from dledger.rocketmq.registration import REGISTRAR_KEYS, broker_registrar
from dledger.rocketmq.v5.config import ENDPOINT_KEYS, EndpointConfig
from dledger.testing.launcher import (
    BROKER_MODULE,
    READY_TIMEOUT_S,
    STATE_FILE,
    StoreInUseError,
    bind_problem,
    ensure_peer_secret,
    free_ports,
    listen_problem,
    log_sizes,
    stop_on_terminate,
    wait_ready,
)

__all__ = ["BrokerReplica", "LocalBrokerGroup", "add_broker_command", "main", "run_local_group"]

log = logging.getLogger("dledger.broker")


class BrokerReplica:
    """One replica in this process: `await start()`, then serve until `await stop()`."""

    def __init__(self, props: dict[str, str], *, seed: int | None = None, probe_ports: bool = False) -> None:
        """`probe_ports`: first check that the node's and the endpoint's ports are free (OSError naming the
        one in use), before the store directory is made."""
        from dledger.rocketmq.v5.cluster import ClusterRoutes  # needs the dledger[rocketmq] extra
        from dledger.rocketmq.v5.service import MessagingEndpoint
        from dledger.rocketmq.v5.support import ApplyNotifier

        self.node_config = NodeConfig.from_properties(
            props, other_keys=[*BROKER_KEYS, *ENDPOINT_KEYS, *REGISTRAR_KEYS, *REMOTING_KEYS]
        )
        self.config = EndpointConfig.from_properties(props, self.node_config)
        if probe_ports:
            _probe_ports(self.node_config, self.config)
        options = StoreOptions.from_properties(props, file_reserved_hours=self.node_config.file_reserved_hours)
        self.node_config = with_entry_room(self.node_config, options)  # maxMessageSize limits the body alone
        self.store = MessageStore(self.node_config.store_dir, options)
        self.notifier = ApplyNotifier(self.store.last_applied())
        self.server = DLedgerServer(self.node_config, [self.store, self.notifier], seed=seed)
        self.store.bind(self.server)
        self.endpoint = MessagingEndpoint(self.store, self.config, self.notifier)
        grants = self.node_config.client_grants
        self.admin = AdminService(
            self.store,
            dict(self.config.endpoints),
            ClientGrants.load(grants) if grants is not None else None,
            (self.config.access_key, self.config.secret_key) if self.config.access_key else None,
        )
        self.server.metrics.registry.register(BrokerCollector(self.store))
        self.registrar = broker_registrar(
            props,
            self.node_config,
            self.config.broker_name,
            self.server,
            self.store,
            options,
            grpc_endpoints=list(self.config.endpoints.values()),
        )
        if self.registrar is not None:
            self.endpoint.cluster = ClusterRoutes(self.registrar.config.namesrv_addrs, self.config.broker_name)
        self._grpc: Any = None
        # RocketMQ 4.x clients and tools: the remoting face on listenPort (10911 unless the conf says)
        self.remoting = RemotingBroker(self.store, RemotingConfig.from_properties(props), self.notifier.wait)

    @classmethod
    def from_file(cls, path: str | pathlib.Path, *, probe_ports: bool = False) -> BrokerReplica:
        return cls(load_properties(path), probe_ports=probe_ports)

    async def start(self) -> None:
        import grpc.aio
        from rocketmq.grpc_protocol import service_pb2_grpc as sg  # type: ignore[import-untyped]

        await self.server.start()
        try:
            await self.store.start()
            server = grpc.aio.server(
                options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
            )
            sg.add_MessagingServiceServicer_to_server(self.endpoint, server)
            server.add_generic_rpc_handlers((self.admin.handler(),))  # the admin RPC, on the same port
            host, _, port = self.config.address.rpartition(":")
            try:
                server.add_insecure_port(f"{host}:{port}")
            except RuntimeError as exc:
                raise OSError(f"cannot listen on {self.config.address}: {exc}") from None
            await server.start()
            self._grpc = server
            await self.remoting.start()
            if self.registrar is not None:
                self.remoting.on_topics_changed(self.registrar.register_soon)
                await self.registrar.start()
        except BaseException:
            await self.remoting.stop()
            if self._grpc is not None:
                await self._grpc.stop(0)
                self._grpc = None
            await self.store.stop()
            await self.server.stop()
            self.store.close()
            raise

    async def stop(self) -> None:
        if self.registrar is not None:
            await self.registrar.stop()
        await self.remoting.stop()
        if self._grpc is not None:
            await self._grpc.stop(0.5)
            self._grpc = None
        await self.endpoint.close()
        await self.store.stop()
        await self.server.stop()
        self.store.close()


def _probe_ports(node: NodeConfig, endpoint: EndpointConfig) -> None:
    problem = listen_problem(node)
    if problem is None:
        host, port = parse_address(endpoint.address)
        problem = bind_problem(host, port)
        if problem is not None:
            problem = f"cannot serve clients on {endpoint.address} (grpcServerPort): {problem.lower()}"
    if problem is not None:
        raise OSError(problem)


async def _serve(path: str) -> None:
    replica = BrokerReplica.from_file(path, probe_ports=True)
    await replica.start()
    tune_gc()
    cfg = replica.config
    remoting = replica.remoting.ctx.config.address
    print(f"dledger broker {cfg.self_id} ready: MessagingService on {cfg.address}, remoting on {remoting}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await replica.stop()


def _cmd_broker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        load_properties(args.config)
        factory = tuning.loop_factory()
        tune_malloc()
        tuning.run(_serve(args.config), factory)
    except (ConfigError, tuning.EventLoopChoiceError) as exc:
        print(f"dledger broker: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"dledger broker: {exc} (install the extra: pip install 'dledger[rocketmq]')", file=sys.stderr)
        return 2
    except StoreInUseError as exc:
        print(f"dledger broker: the store is in use: {exc} (another replica runs on it)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dledger broker: {exc}", file=sys.stderr)
        return 1
    return 0


def add_broker_command(sub: Any) -> None:
    """Register `dledger broker` on the CLI's subparsers."""
    p = sub.add_parser("broker", help="run one broker replica: a node, its message store and a RocketMQ 5 endpoint")
    p.add_argument("--config", required=True, help="broker.conf: dLeger* keys, broker keys, grpcServerPort, ...")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_cmd_broker)


@dataclass
class LocalBrokerGroup:
    """A local broker group: `create(root)`, `start_all()`, `endpoints` for the clients, `stop_all()`."""

    root: pathlib.Path
    peers: dict[str, str]
    endpoints: dict[str, str]
    group: str = "broker"
    extra: dict[str, str] = field(default_factory=dict)
    remoting: dict[str, str] = field(default_factory=dict)  # node id -> listenPort address (4.x clients)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    detached: bool = False  # own session: the replicas outlive the launching command and its Ctrl-C
    flush: str = "async"  # recorded in the state file only (the replicas' flush is the conf's flushDiskType)

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        nodes: int = 3,
        *,
        group: str = "broker",
        extra: dict[str, str] | None = None,
        base_port: int | None = None,
    ) -> LocalBrokerGroup:
        """`base_port`: endpoints on base_port, base_port + 1, ...; the replicas' dLedger ports 100 above,
        their remoting ports (listenPort) 200 above (default: free ports the system picks)."""
        if not 1 <= nodes <= 9:
            raise ConfigError(f"--nodes: {nodes} must be between 1 and 9")
        if base_port is not None and not 1 <= base_port <= 65535 - 100 - nodes:
            raise ConfigError(f"--base-port: {base_port} leaves no room for {nodes} replicas")
        if base_port is None:
            ports = free_ports(3 * nodes)
        else:
            ports = [base_port + d + k for d in (100, 0, 200) for k in range(nodes)]
        peers = {f"n{k}": f"127.0.0.1:{ports[k]}" for k in range(nodes)}
        endpoints = {f"n{k}": f"127.0.0.1:{ports[nodes + k]}" for k in range(nodes)}
        remoting = {f"n{k}": f"127.0.0.1:{ports[2 * nodes + k]}" for k in range(nodes)}
        path = pathlib.Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, peers, endpoints, group, dict(extra or {}), remoting)

    @property
    def access_point(self) -> str:
        """What a client's `ClientConfiguration(endpoints=...)` takes: every replica, `;`-separated."""
        return ";".join(self.endpoints.values())

    def conf_path(self, node_id: str) -> pathlib.Path:
        return self.root / f"{node_id}.conf"

    def write_conf(self, node_id: str) -> pathlib.Path:
        keys = {
            "brokerName": self.group,
            "dLegerGroup": self.group,
            "dLegerPeers": format_peers(self.peers),
            "dLegerSelfId": node_id,
            "storePathRootDir": str(self.root / node_id),
            "grpcEndpoints": format_peers(self.endpoints),
            "grpcServerPort": self.endpoints[node_id].rpartition(":")[2],
            **({"listenPort": self.remoting[node_id].rpartition(":")[2]} if node_id in self.remoting else {}),
            **({"remotingPeers": format_peers(self.remoting)} if set(self.remoting) == set(self.peers) else {}),
            "dLegerPeerSecretFile": str(ensure_peer_secret(self.root)),
            **self.extra,
        }
        path = self.conf_path(node_id)
        path.write_text("".join(f"{k}={v}\n" for k, v in keys.items()))
        return path

    def command(self, node_id: str) -> list[str]:
        return [sys.executable, "-m", BROKER_MODULE, "--config", str(self.conf_path(node_id))]

    def start(self, node_id: str) -> None:
        self.write_conf(node_id)
        with open(self.root / f"{node_id}.log", "ab") as out:
            self.procs[node_id] = subprocess.Popen(
                self.command(node_id),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
            )
        self.save_state()

    def start_all(self) -> None:
        for node_id in self.peers:
            self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(node_id, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.save_state()

    def save_state(self) -> None:
        """`<root>/cluster.json`, as `LocalProcessGroup` writes it: `dledger cluster stop DIR` and `dledger
        status --cluster DIR` find the replicas (their dLedger peers) by it; `endpoints` is for clients."""
        state = {
            "group": self.group,
            "peers": format_peers(self.peers),
            "flush": self.flush,
            "pids": {i: p.pid for i, p in self.procs.items() if p.poll() is None},
            "endpoints": format_peers(self.endpoints),
        }
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.root / STATE_FILE)

    def alive(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node_id in list(self.procs):
            proc = self.procs.pop(node_id)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.save_state()


def run_local_group(
    root: str,
    nodes: int = 3,
    *,
    group: str = "broker",
    flush: str = "async",
    base_port: int | None = None,
    detach: bool = False,
) -> int:
    """`dledger cluster --broker`: start a local broker group, in the foreground until Ctrl-C or SIGTERM, or
    detached (`dledger cluster stop DIR` stops it)."""
    import time

    extra = {"flushDiskType": "SYNC_FLUSH" if flush == "sync" else "ASYNC_FLUSH"}
    try:
        g = LocalBrokerGroup.create(root, nodes, group=group, extra=extra, base_port=base_port)
    except ConfigError as exc:
        print(f"dledger cluster: {exc}", file=sys.stderr)
        return 2
    g.detached, g.flush = detach, flush
    if detach:
        offsets = log_sizes(g.root, g.peers)
        g.start_all()
        failed = wait_ready(g.root, offsets, g.alive, READY_TIMEOUT_S)
        if failed:
            g.stop_all()
            why = "; ".join(f"{node_id} {reason}" for node_id, reason in failed.items())
            print(f"dledger cluster: {why}", file=sys.stderr)
            return 1
        print(f"broker group {group!r}: {nodes} replicas; clients use endpoints={g.access_point!r}")
        print(f"configs and logs in {g.root}")
        print(f"status: dledger status --cluster {g.root}\nadmin:  dledger admin --cluster {g.root} topic list")
        print(f"stop:   dledger cluster stop {g.root}")
        return 0
    stop_on_terminate()
    try:
        g.start_all()
        print(f"broker group {group!r}: {nodes} replicas; clients use endpoints={g.access_point!r}")
        print(f"configs and logs in {g.root} (Ctrl-C stops every replica)", flush=True)
        while all(g.alive(i) for i in g.peers):
            time.sleep(0.5)
        print(f"a replica exited: see {g.root}/<id>.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        g.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dledger broker")
    sub = parser.add_subparsers(dest="command")
    add_broker_command(sub)
    args = parser.parse_args(["broker", *(argv if argv is not None else sys.argv[1:])])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
