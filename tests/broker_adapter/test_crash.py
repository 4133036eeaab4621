"""An abnormal shutdown (SIGKILL of a replica process in the middle of a stream of puts) never leaves its
consume queues or indexes disagreeing with the log: after a restart it replays from its LMDB `applied` and
ends byte-identical to the master (apache/rocketmq#7355 is a consume-queue rebuild error after such a crash)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from dledger.broker_adapter import Message, MessageStore, StoreOptions
from dledger.client.aio_client import AsyncDLedgerClient
from tests.broker_adapter.group_util import IDS, BrokerGroup, dump
from tests.node.cluster_util import peers_for

pytestmark = pytest.mark.process

ROOT = pathlib.Path(__file__).resolve().parents[2]


def spawn(
    node_id: str, peers: dict[str, str], store_dir: pathlib.Path, overrides: dict[str, object]
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "tests.broker_adapter.replica_proc", node_id, json.dumps(peers), str(store_dir)]
    return subprocess.Popen([*args, json.dumps(overrides)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def test_a_replica_killed_mid_stream_replays_to_identical_tables(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        overrides: dict[str, object] = {"preferred_leader": "n0"}
        group = BrokerGroup(tmp_path, peers_for(IDS), StoreOptions(retention_interval_s=0), overrides)
        await group.start("n0")
        await group.start("n1")
        child = spawn("n2", group.peers, tmp_path / "n2", overrides)
        client = AsyncDLedgerClient(group.peers, group="b")
        stop = asyncio.Event()
        acked = 0

        async def producer() -> None:
            nonlocal acked
            k = 0
            while not stop.is_set():
                master = group.master()
                if master is None:
                    await asyncio.sleep(0.01)
                    continue
                result = await group.stores[master].put_messages(
                    [Message("T", f"{k}-{j}".encode(), keys=(f"k{k}",)) for j in range(4)]
                )
                acked += 4 * result.ok
                k += 1

        async def child_applied() -> int:
            infos = {i.id: i for i in await client.status(timeout=0.5)}
            return infos["n2"].applied_index if infos["n2"].reachable else 0

        try:
            await group.wait_for(lambda: group.master() == "n0", timeout=20, what="n0 master")
            task = asyncio.create_task(producer())
            deadline = asyncio.get_running_loop().time() + 30
            while await child_applied() < 20:
                assert asyncio.get_running_loop().time() < deadline, "the child never caught up"
                await asyncio.sleep(0.05)
            child.send_signal(signal.SIGKILL)  # the crash: no flush, no clean close
            child.wait(10)
            killed_at = acked
            await group.wait_for(lambda: acked >= killed_at + 40, what="puts while n2 is down")
            child = spawn("n2", group.peers, tmp_path / "n2", overrides)
            await group.wait_for(lambda: acked >= killed_at + 80, timeout=20, what="puts after the restart")
            stop.set()
            await task
            master = group.stores["n0"]
            target = master._srv().applied_index
            while await child_applied() < target:
                assert asyncio.get_running_loop().time() < deadline + 30, "the restarted child never caught up"
                await asyncio.sleep(0.05)
            child.send_signal(signal.SIGTERM)
            assert child.wait(20) == 0
            replica = MessageStore(tmp_path / "n2")  # its tables, opened without a server
            try:
                assert dump(replica) == dump(master)
                assert replica.tables.applied() == master.last_applied()
            finally:
                replica.close()
        finally:
            stop.set()
            if child.poll() is None:
                child.kill()
                child.wait(10)
            await client.close()
            await group.stop_all()

    asyncio.run(main())
