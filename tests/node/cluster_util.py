"""Helpers for runtime tests: free loopback ports and in-process groups of DLedgerServers, either on sockets
(gRPC peers and clients on loopback) or on a `MemoryHub` (no socket at all: peers through the hub, clients
through `MemoryStubs`; the addresses are names only, never bound)."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from dledger.storage_api import Entry
from dledger.testing.launcher import free_ports
from dledger.testing.memory_client import MemoryStubs
from dledger.testing.memory_transport import MemoryHub
from tests.support import wait_for_async


def peers_for(ids: Sequence[str]) -> dict[str, str]:
    return {i: f"127.0.0.1:{p}" for i, p in zip(ids, free_ports(len(ids)), strict=True)}


def memory_peers(ids: Sequence[str]) -> dict[str, str]:
    """Addresses for nodes on a hub: well-formed, never bound (nothing listens on them)."""
    return {i: f"127.0.0.1:{k + 1}" for k, i in enumerate(ids)}


class RecordingStateMachine:
    """Keeps every applied entry; `resume_at` pretends earlier entries were applied in a previous run."""

    def __init__(self, resume_at: int = 0) -> None:
        self.applied: list[Entry] = []
        self.resume_at = resume_at

    def last_applied(self) -> int:
        return self.resume_at

    def apply(self, entry: Entry) -> None:
        self.applied.append(entry)


@dataclass
class LocalGroup:
    root: pathlib.Path
    peers: dict[str, str]
    overrides: dict[str, Any] = field(default_factory=dict)
    servers: dict[str, DLedgerServer] = field(default_factory=dict)
    machines: dict[str, RecordingStateMachine] = field(default_factory=dict)
    hub: MemoryHub | None = None  # peers and clients talk through it: no socket

    def config(self, node_id: str) -> NodeConfig:
        return NodeConfig(self_id=node_id, peers=self.peers, store_dir=self.root / node_id, group="t", **self.overrides)

    async def start(self, node_id: str, resume_at: int = 0) -> DLedgerServer:
        sm = RecordingStateMachine(resume_at)
        seed = hash(node_id) & 0xFFFF
        if self.hub is not None:
            server = self.hub.server(self.config(node_id), [sm], seed=seed)
        else:
            server = DLedgerServer(self.config(node_id), [sm], seed=seed)
        await server.start()
        self.servers[node_id], self.machines[node_id] = server, sm
        return server

    def client(self, peers: dict[str, str] | None = None, **kwargs: Any) -> AsyncDLedgerClient:
        """A client of the group (of `peers` when given): over gRPC, or through the hub when there is one."""
        stubs = MemoryStubs(self.hub) if self.hub is not None else None
        return AsyncDLedgerClient(self.peers if peers is None else peers, group="t", stubs=stubs, **kwargs)

    async def start_all(self) -> None:
        for node_id in self.peers:
            await self.start(node_id)

    async def stop(self, node_id: str) -> None:
        await self.servers.pop(node_id).stop(grace=0)

    async def stop_all(self) -> None:
        for node_id in list(self.servers):
            await self.stop(node_id)

    def leader(self) -> str | None:
        leaders = [i for i, s in self.servers.items() if s.node.role == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    async def wait_for(self, cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        return await wait_for_async(cond, timeout, what)

    async def wait_for_leader(self, timeout: float = 10.0) -> str:
        result: str = await self.wait_for(self.leader, timeout, "a single leader")
        return result


def run_group(
    tmp_path: pathlib.Path,
    body: Callable[[LocalGroup], Awaitable[None]],
    ids: Sequence[str] = ("n0", "n1", "n2"),
    hub: MemoryHub | None = None,
    **overrides: Any,
) -> None:
    """Start an in-process group on free ports, run `body` with it, and stop every node afterwards. With a
    `hub`, the nodes and `group.client()` go through it (no socket)."""

    async def main() -> None:
        peers = peers_for(ids) if hub is None else memory_peers(ids)
        group = LocalGroup(tmp_path, peers, dict(overrides), hub=hub)
        await group.start_all()
        try:
            await body(group)
        finally:
            await group.stop_all()

    asyncio.run(main())
