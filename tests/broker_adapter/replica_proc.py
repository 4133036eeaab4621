"""A replica in a process of its own, for crash tests: `python -m tests.broker_adapter.replica_proc ID PEERS_JSON
DIR [OVERRIDES_JSON]`. SIGTERM stops it cleanly (exit 0); SIGKILL is the crash under test."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sys

from dledger.broker_adapter import MessageStore, StoreOptions
from dledger.node.config import NodeConfig


async def main(node_id: str, peers: dict[str, str], root: pathlib.Path, overrides: dict[str, object]) -> None:
    config = NodeConfig(self_id=node_id, peers=peers, store_dir=root, group="b", **overrides)  # type: ignore[arg-type]
    store = MessageStore.create(config, StoreOptions(retention_interval_s=0))
    await store.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("started", flush=True)
    await stop.wait()
    await store.stop()


if __name__ == "__main__":
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), pathlib.Path(sys.argv[3]), extra))
