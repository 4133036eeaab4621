"""`DLedgerServer`: the embedding API. One node: its storage, its Raft driver and its gRPC endpoint.

asyncio: `await server.start()` / `await server.stop()`. Anywhere else: `SyncDLedgerServer`, which runs the
same server on an event loop in a background thread. Invariants: `start` returns once storage is recovered
and the endpoint listens (a port already in use or a bad store raises, with nothing left running); `stop`
fails in-flight requests with a clear status, stops the endpoint, then closes the files. A server built
with `grpc_endpoint=False` (tests on `dledger.testing.memory_transport`) opens no socket at all: it keeps
the same order of start and stop, and clients reach `client_servicer` in process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import pathlib
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.aio_client import StubSource
from dledger.commitlog import SegmentInfo
from dledger.node import tuning
from dledger.node.client_auth import ClientAuthInterceptor, ClientGrants
from dledger.node.config import NodeConfig, parse_address
from dledger.node.join_term import ensure_join_term
from dledger.node.log_limits import quiet_grpc_decode_errors
from dledger.node.metrics import NodeMetrics
from dledger.node.node import RaftNode, RoleCallback
from dledger.node.peer_auth import PeerGate
from dledger.node.peer_transports import Transport, make_listener, make_transport
from dledger.node.services import ClientServicer
from dledger.node.state_machine import StateMachine
from dledger.node.tcp_listener import TcpPeerListener
from dledger.node.tcp_peer import tcp_peer_address
from dledger.node.transport import PeerServicer, server_options
from dledger.storage_api import Entry, SnapshotMeta

__all__ = ["DLedgerServer", "SyncDLedgerServer"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class DLedgerServer:
    """One dledger node, embedded in an asyncio program."""

    def __init__(
        self,
        config: NodeConfig,
        state_machines: Sequence[StateMachine] = (),
        *,
        seed: int | None = None,
        durable_report_ms: int | None = None,
        transport_factory: Callable[[NodeConfig], Transport] = make_transport,
        grpc_endpoint: bool = True,
        group_stubs: StubSource | None = None,
    ) -> None:
        """`durable_report_ms` (for fault-injection tools): every so often, write `<store>/log/DURABLE`,
        JSON {segment name: [fsynced data bytes, fsynced index bytes]}; it never claims more than is durable.
        `transport_factory`: builds the peer transport at `start` (default: the one `config` names; tests
        pass `dledger.testing.memory_transport.MemoryHub`'s, which needs no peer sockets).
        `grpc_endpoint=False`: no gRPC server (peers and clients must come through the transport and
        `client_servicer` in process); only a memory-transport node can run so. `group_stubs`: how a
        joining node asks its group for its term (see join_term.py; gRPC by default)."""
        if not grpc_endpoint and (config.peer_transport != "grpc" or transport_factory is make_transport):
            raise ValueError("a node without its gRPC endpoint needs an in-process peer transport")
        self.config = config
        self.node = RaftNode(config, state_machines, seed=seed, transport_factory=transport_factory)
        self._grpc_endpoint = grpc_endpoint
        self._group_stubs = group_stubs
        self._grpc: grpc.aio.Server | None = None
        self._running = False
        self.peer_listener: TcpPeerListener | None = None
        self._durable_report_ms = durable_report_ms
        self._reporter: asyncio.Task[None] | None = None
        self._health_task: asyncio.Task[None] | None = None
        self.health = health.aio.HealthServicer()
        self.metrics = NodeMetrics(self.node)
        self.metrics_port: int | None = None
        # client authorization: the grants file is read here, so a bad one fails before any storage opens
        grants = config.client_grants
        self._interceptors = [] if grants is None else [ClientAuthInterceptor(ClientGrants.load(grants))]
        self.peer_gate = PeerGate(config.peer_auth_mode, config.group, config.self_id, config.peer_secret)
        self.peer_servicer = PeerServicer(
            config.group,
            config.self_id,
            self.node.deliver,
            self.node.receive_snapshot_chunk,
            self.peer_gate,
        )
        self.client_servicer = ClientServicer(self.node, self.metrics)

    def on_role_change(self, callback: RoleCallback) -> None:
        """`callback(role, term, leader_id)` runs on the event loop whenever the role or leader changes."""
        self.node.on_role_change(callback)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await ensure_join_term(
            self.config, stubs=self._group_stubs
        )  # a wiped node re-added under its old id: see join_term.py
        self.config.store_dir.mkdir(0o700, parents=True, exist_ok=True)  # the store is its owner's only
        await loop.run_in_executor(None, self.node.open_storage)
        if self.config.peer_auth_mode == "none":
            log.warning(
                "peer authentication is off: anyone who can reach %s can speak as a peer of group %s "
                "(give the group a secret: dLegerPeerSecret / --peer-secret-file; see docs/security.md)",
                self.config.address,
                self.config.group,
            )
        if self.config.peer_transport == "tcp":  # first: a gRPC server bound but never started keeps its port
            try:
                await self._listen_for_peers()
            except OSError:
                await loop.run_in_executor(None, self.node._close_storage)
                raise
        if self._grpc_endpoint:
            await self._serve_grpc()
        self._running = True
        self.node.start()
        self._health_task = loop.create_task(self._track_health())
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
        if self._durable_report_ms:
            self._reporter = loop.create_task(self._report_durable(self._durable_report_ms / 1000))

    async def _serve_grpc(self) -> None:
        """The gRPC endpoint (clients, and peers on the gRPC transport), started; on failure nothing is left
        running and the store is closed."""
        loop = asyncio.get_running_loop()
        quiet_grpc_decode_errors()
        server = grpc.aio.server(options=server_options(self.config.max_message_bytes), interceptors=self._interceptors)
        pb_grpc.add_RaftPeerServicer_to_server(self.peer_servicer, server)
        self.peer_gate.register(server)
        pb_grpc.add_DLedgerClientServiceServicer_to_server(self.client_servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        host, port = parse_address(self.config.address)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            tls = self.config.tls
            if tls is None:
                server.add_insecure_port(bind)
            else:
                server.add_secure_port(bind, tls.server_credentials())
        except RuntimeError as exc:
            if self.peer_listener is not None:
                await self.peer_listener.close()
                self.peer_listener = None
            await loop.run_in_executor(None, self.node._close_storage)
            raise OSError(f"cannot listen on {self.config.address}: {exc}") from None
        await server.start()
        self._grpc = server

    async def _listen_for_peers(self) -> None:
        """The TCP peer transport's listener, on the node's port + peer_port_offset (see tcp_peer)."""
        listener = make_listener(self.config, self.peer_servicer.check, self.node.deliver)
        host, port = tcp_peer_address(self.config.address, self.config.peer_port_offset)
        try:
            await listener.start(host, port)
        except OSError as exc:
            raise OSError(f"cannot listen for peers on {host}:{port}: {exc.strerror or exc}") from None
        self.peer_listener = listener

    async def _report_durable(self, interval: float) -> None:
        store = self.node.log
        assert store is not None
        path = pathlib.Path(store.directory) / "DURABLE"
        tmp = path.with_suffix(".tmp")
        while True:
            store = self.node.log or store  # an in-place repair reopens the log
            lengths = store.durable_lengths()  # read before writing: the report may lag, never lead
            tmp.write_text(json.dumps({name: list(v) for name, v in lengths.items()}))
            os.replace(tmp, path)
            await asyncio.sleep(interval)

    async def _track_health(self) -> None:
        """The standard gRPC health service says SERVING only while this node knows a leader and can write."""
        serving = None
        while True:
            now = self.node.node_status().healthy
            if now != serving:
                status = health_pb2.HealthCheckResponse.SERVING if now else health_pb2.HealthCheckResponse.NOT_SERVING
                for service in ("", "dledger.v1.DLedgerClientService"):
                    await self.health.set(service, status)
                serving = now
            await asyncio.sleep(self.config.tick_ms / 1000)

    async def stop(self, grace: float = 1.0) -> None:
        for task in (self._reporter, self._health_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reporter = self._health_task = None
        self.metrics.close()
        if self._running:
            self._running = False
            await self.node.stop()  # fails waiters first, so in-flight RPCs answer before the endpoint closes
            if self.peer_listener is not None:
                await self.peer_listener.close()
                self.peer_listener = None
            if self._grpc is not None:
                await self._grpc.stop(grace)
                self._grpc = None

    async def wait_for_leader(self, timeout: float = 10.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = self.node.node_status()
            if status.leader_id:
                return status.leader_id
            if loop.time() > deadline:
                raise TimeoutError(f"no leader known to {self.config.self_id} within {timeout} s")
            await asyncio.sleep(self.config.tick_ms / 1000)

    # in-process shortcuts for an embedding broker (the same rules as the gRPC service)
    async def append(self, items: Sequence[bytes]) -> tuple[int, int]:
        return await self.node.append(items)

    async def read_index(self) -> int:
        return await self.node.read_index()

    async def get(self, index: int) -> Entry:
        return await self.node.get(index)

    def status(self) -> pb.NodeStatus:
        return self.node.node_status()

    @property
    def is_leader(self) -> bool:
        return self.node.role == "leader"

    @property
    def leader_id(self) -> str | None:
        core = self.node.core
        return core.leader_id if core is not None else None

    @property
    def commit_index(self) -> int:
        core = self.node.core
        return core.commit_index if core is not None else 0

    @property
    def applied_index(self) -> int:
        core = self.node.core
        return core.applied if core is not None else 0

    def segments(self) -> list[SegmentInfo]:
        """The log's segments, oldest first, for a retention policy."""
        return self.node.log.segments() if self.node.log is not None else []

    async def compact(self, before_index: int) -> int:
        """Drop whole segments below `before_index`, never past the applied index nor the latest snapshot
        (taking one first when the state machines can); returns the new first index."""
        return await self.node.compact(before_index)

    async def take_snapshot(self) -> SnapshotMeta | None:
        """Snapshot the state machines now; None when they cannot (see `RaftNode.take_snapshot`)."""
        meta: SnapshotMeta | None = await self.node.take_snapshot()
        return meta

    # membership (one single-server change at a time, committed through the log; leader only)
    async def change_membership(self, op: int, node_id: str, address: str = "") -> tuple[int, list[pb.Member]]:
        result: tuple[int, list[pb.Member]] = await self.node.change_membership(op, node_id, address)
        return result

    def members(self) -> list[pb.Member]:
        members: list[pb.Member] = self.node.members()
        return members


class SyncDLedgerServer:
    """`DLedgerServer` for code without an event loop: the loop runs in a daemon thread."""

    def __init__(
        self, config: NodeConfig, state_machines: Sequence[StateMachine] = (), *, seed: int | None = None
    ) -> None:
        self.server = DLedgerServer(config, state_machines, seed=seed)
        self._loop = tuning.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dledger-loop", daemon=True)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> None:
        self._thread.start()
        try:
            self._call(self.server.start())
        except BaseException:
            self._shutdown_loop()
            raise

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self._call(self.server.stop())
            finally:
                self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def on_role_change(self, callback: RoleCallback) -> None:
        self.server.on_role_change(callback)

    def append(self, items: Sequence[bytes], timeout: float = 10.0) -> tuple[int, int]:
        return self._call(self.server.append(items), timeout)

    def read_index(self, timeout: float = 10.0) -> int:
        return self._call(self.server.read_index(), timeout)

    def get(self, index: int, timeout: float = 10.0) -> Entry:
        return self._call(self.server.get(index), timeout)  # the leader may need a ReadIndex round

    def status(self) -> pb.NodeStatus:
        result: pb.NodeStatus = self._call(_value(self.server.status))
        return result

    def wait_for_leader(self, timeout: float = 10.0) -> str:
        return self._call(self.server.wait_for_leader(timeout))

    def __enter__(self) -> SyncDLedgerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _value(func: Any) -> Any:
    return func()
