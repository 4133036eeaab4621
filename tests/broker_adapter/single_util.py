"""A one-replica MessageStore (its own single-node group) with a fake leader clock, for API tests."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

from dledger.broker_adapter import MessageStore, StoreOptions
from dledger.node.config import NodeConfig
from tests.broker_adapter.group_util import FakeClock
from tests.node.cluster_util import peers_for
from tests.support import wait_for_async


def run_single(
    tmp_path: pathlib.Path,
    body: Callable[[MessageStore, FakeClock], Awaitable[None]],
    **options: Any,
) -> None:
    """Run `body(store, clock)` on a started one-node store that is already master."""
    clock = FakeClock()
    opts = StoreOptions(clock=clock, retention_interval_s=0, timer_interval_s=0.005, **options)
    config = NodeConfig(self_id="s0", peers=peers_for(["s0"]), store_dir=tmp_path / "s0", group="b")

    async def main() -> None:
        store = MessageStore.create(config, opts, seed=1)
        await store.start()
        try:
            await wait_for_async(lambda: store.is_master, what="master")
            await body(store, clock)
        finally:
            await store.stop()

    asyncio.run(main())
