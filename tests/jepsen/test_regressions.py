"""Deterministic regression tests for bugs that the jepsen_like campaign found in dledger.

Each one reproduces its bug deterministically (on the in-memory simulation, on in-process servers, or on
real node processes with the fault set up step by step) and stays marked `xfail(strict=True)` until the
owners fix the bug: then it passes, the strict xfail fails, and the marker is removed.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading
from typing import TypeVar

import pytest

from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from dledger.storage_api import HardState
from dledger.testing import Cluster as SimCluster
from jepsen_like.cluster import GROUP, Cluster
from jepsen_like.procutil import RunState
from jepsen_like.proxy import free_ports
from tests.support import wait_for, wait_for_async

T = TypeVar("T")


def _lose_unsynced_tail(c: SimCluster, node_id: str, keep: int) -> None:
    """Power cut on an async-flush node: crash it and cut its log back to `keep` entries (what was fsynced),
    as `dledger node` recovers it: the commit index is clamped to the log, the state machine restarts below."""
    c.crash(node_id)
    node = c.nodes[node_id]
    node.log.truncate_after(keep)
    hs = node.store.load()
    node.store.save(HardState(hs.current_term, hs.voted_for, min(hs.commit_index, keep)))
    node.applied = node.applied[:keep]
    c.start(node_id)


# Async flush with the `lost-writes` nemesis: a follower that lost its un-fsynced tail must not stay stuck at
# its old commit index while the others move on (a run that never heals).
def test_follower_that_lost_its_unsynced_tail_catches_up() -> None:
    c = SimCluster(3, seed=7)
    leader = c.run_until_leader()
    for k in range(10):
        c.propose(leader, f"a-{k}".encode())
    c.stabilize()
    follower = next(i for i in c.ids if i != leader)
    last = c.core(leader).last_index
    assert c.core(follower).last_index == last
    _lose_unsynced_tail(c, follower, keep=last - 5)
    for k in range(5):
        c.propose(leader, f"b-{k}".encode())
        c.run(200)  # with the bug the leader and the follower exchange append / reject without end
    for _ in range(20):  # heartbeats: plenty of chances to find the follower's real log end
        c.tick(times=c.core(leader).config.heartbeat_tick)
        c.run(200)
    assert c.core(follower).last_index == c.core(leader).last_index, c.describe()
    assert c.core(follower).commit_index == c.core(leader).commit_index


# ---- real processes: lease reads after a process pause ----


# Lease reads with the `pause-isolate-leader` nemesis: a leader paused, then cut off, must not serve a stale or
# non-monotonic read when it resumes; the driver accounts every stalled tick before it takes input.
@pytest.mark.process
def test_a_paused_then_isolated_lease_leader_does_not_serve_stale_reads(tmp_path: pathlib.Path) -> None:
    state = RunState(f"r{os.getpid() % 4096:03x}")
    cluster = Cluster(tmp_path, 3, flush="sync", net="proxy", state=state, lease_read=True, durable_report_ms=0)
    try:
        cluster.setup_network()
        cluster.start_all()
        old = wait_for(cluster.leader, 30, "a leader")
        with cluster.client(timeout=10) as client:
            client.append(b"before")
        cluster.pause(old)
        others = [n for n in cluster.ids if n != old]
        new = wait_for(lambda: (lambda lead: lead if lead in others else None)(cluster.leader()), 30, "a new leader")
        with cluster.client(timeout=10) as client:
            written = wait_for(lambda: _try_append(client, b"after"), 30, "a write through the new leader")
        cluster.partition({frozenset((old, o)) for o in others})  # the old leader cannot hear of the new term
        answers: list[tuple[int, str | None]] = []
        with DLedgerClient({old: cluster.addresses[old]}, group=GROUP, timeout=3, rpc_timeout=3) as stale:
            reader = threading.Thread(target=lambda: answers.append(_try_read(stale, old)))
            reader.start()  # the request waits in the paused node's socket
            cluster.resume(old)
            reader.join(10)
        assert answers, "the read did not finish"
        read_index, answered_by = answers[0]
        assert answered_by != old or read_index >= written, (
            f"{old} answered read index {read_index} from its old lease, but {new} had committed index {written}"
        )
    finally:
        cluster.close()
        state.discard()


def _try_append(client: DLedgerClient, data: bytes) -> int | None:
    try:
        return client.append(data).index
    except DLedgerError:
        return None


def _try_read(client: DLedgerClient, asked: str) -> tuple[int, str | None]:
    """(read index, who answered): the node asked, unless it redirected the client to another leader."""
    try:
        index = client.read_index()
    except DLedgerError:
        return -1, None
    return index, client.leader or asked


# ---- in-process nodes: a cancelled read that meets "not leader" must not fence the node ----


# Lease reads with the `pause-isolate-leader` nemesis: a read cancelled on a follower must not fence the node
# with "invalid state" (the group would never heal).
def test_a_cancelled_read_on_a_follower_does_not_fence_the_node(tmp_path: pathlib.Path) -> None:
    asyncio.run(_cancelled_read_on_follower(tmp_path))


async def _cancelled_read_on_follower(tmp_path: pathlib.Path) -> None:
    peers = {f"n{k}": f"127.0.0.1:{port}" for k, port in enumerate(free_ports(3))}
    servers = {i: DLedgerServer(NodeConfig(self_id=i, peers=peers, store_dir=tmp_path / i, group="t")) for i in peers}
    try:
        for s in servers.values():
            await s.start()
        await wait_for_async(lambda: sum(s.is_leader for s in servers.values()) == 1
                             and all(s.leader_id for s in servers.values()), 20, "a leader known to all")  # fmt: skip
        follower = next(s for s in servers.values() if not s.is_leader)
        read = asyncio.create_task(follower.read_index())
        await asyncio.sleep(0)  # the request is queued for the driver ...
        read.cancel()  # ... and its caller gives up before the driver takes it (as a cancelled RPC does)
        readies = follower.node.stats.readies
        await wait_for_async(lambda: follower.node.role == "fenced" or follower.node.stats.readies >= readies + 3,
                             20, "the driver handled the request")  # fmt: skip
        assert follower.node.role != "fenced", follower.node.stats.fenced
    finally:
        for s in servers.values():
            await s.stop(grace=0)
