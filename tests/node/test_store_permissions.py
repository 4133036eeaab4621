"""A node's store is its owner's only: directories 0700, files 0600 (log, index, hard state, snapshots)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import stat

from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from tests.node.cluster_util import peers_for


def test_every_directory_and_file_of_a_store_is_private(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "stores" / "n0"
    config = NodeConfig(self_id="n0", peers=peers_for(["n0"]), store_dir=store)
    old = os.umask(0o022)  # the usual umask: what it would leave readable, the store must not
    try:

        async def main() -> None:
            server = DLedgerServer(config)
            await server.start()
            try:
                await server.wait_for_leader()
                for _ in range(20):
                    await server.append([b"x" * 100])
                assert await server.take_snapshot() is not None
            finally:
                await server.stop()

        asyncio.run(main())
    finally:
        os.umask(old)
    seen = {"dirs": 0, "files": 0}
    for path in [store, *store.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(tmp_path)} is {oct(mode)}"
        seen["dirs" if path.is_dir() else "files"] += 1
    assert seen["dirs"] >= 4 and seen["files"] >= 5, seen  # log/, state/, snapshots/ and what they hold
