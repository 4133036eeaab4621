"""An in-process 3-replica group of MessageStores (each with its own DLedgerServer) for adapter tests."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dledger.broker_adapter import MessageStore, StoreOptions
from dledger.node.config import NodeConfig
from tests.node.cluster_util import peers_for
from tests.support import wait_for_async

IDS = ("n0", "n1", "n2")


class FakeClock:
    """Leader-side epoch milliseconds that tests move by hand (apply never reads it)."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class BrokerGroup:
    root: pathlib.Path
    peers: dict[str, str]
    options: StoreOptions
    overrides: dict[str, Any] = field(default_factory=dict)
    stores: dict[str, MessageStore] = field(default_factory=dict)
    events: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)  # (role, master index, term)

    def config(self, node_id: str) -> NodeConfig:
        return NodeConfig(self_id=node_id, peers=self.peers, store_dir=self.root / node_id, group="b", **self.overrides)

    async def start(self, node_id: str) -> MessageStore:
        store = MessageStore.create(self.config(node_id), self.options, seed=hash(node_id) & 0xFFFF)
        events = self.events.setdefault(node_id, [])

        def record(role: str) -> None:
            events.append((role, store.master_index, int(store._srv().status().term)))

        store.on_master(lambda: record("master"))
        store.on_slave(lambda: record("slave"))
        await store.start()
        self.stores[node_id] = store
        return store

    async def start_all(self) -> None:
        for node_id in self.peers:
            await self.start(node_id)

    async def stop(self, node_id: str) -> None:
        await self.stores.pop(node_id).stop()

    async def stop_all(self) -> None:
        for node_id in list(self.stores):
            await self.stop(node_id)

    def master(self) -> str | None:
        masters = [i for i, s in self.stores.items() if s.is_master]
        return masters[0] if len(masters) == 1 else None

    async def wait_for(self, cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        return await wait_for_async(cond, timeout, what)

    async def wait_for_master(self, timeout: float = 10.0) -> MessageStore:
        node_id: str = await self.wait_for(self.master, timeout, "a single master")
        return self.stores[node_id]

    async def wait_applied(self, index: int, timeout: float = 10.0) -> None:
        """Every running replica's store has applied `index`."""
        await self.wait_for(
            lambda: all(s.last_applied() >= index for s in self.stores.values()), timeout, f"all applied {index}"
        )


def run_group(
    tmp_path: pathlib.Path,
    body: Callable[[BrokerGroup], Awaitable[None]],
    options: StoreOptions | None = None,
    **overrides: Any,
) -> None:
    async def main() -> None:
        opts = options or StoreOptions(retention_interval_s=0)
        group = BrokerGroup(tmp_path, peers_for(IDS), opts, dict(overrides))
        await group.start_all()
        try:
            await body(group)
        finally:
            await group.stop_all()

    asyncio.run(main())


def dump(store: MessageStore) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every record of every table of the store's LMDB (for comparing replicas)."""
    out: dict[str, list[tuple[bytes, bytes]]] = {}
    with store.tables.env.begin() as txn:
        for name, db in store.tables.db.items():
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db).iternext()]
    return out
