"""Prometheus metrics, the gRPC health service, and node id + term in log records."""

from __future__ import annotations

import asyncio
import pathlib
import urllib.request

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from tests.node.cluster_util import LocalGroup, peers_for
from tests.node.procs import ProcessGroup
from tests.support import wait_for

pytestmark = pytest.mark.process


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def _health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return int(reply.status)


async def _health_becomes(address: str, want: int, service: str = "", timeout: float = 10.0) -> int:
    """The health service publishes a change on its next tick: poll it until it says `want` or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (status := await _health(address, service)) != want and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return status


def test_metrics_and_health_follow_the_node(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        group = LocalGroup(tmp_path, peers_for(["n0", "n1", "n2"]), {"metrics_port": 0})
        await group.start_all()
        try:
            leader = await group.wait_for_leader()
            async with AsyncDLedgerClient(group.peers, group="t") as client:
                for _ in range(5):
                    await client.append_batch([b"a", b"b"])
                await client.read_index()
            port = group.servers[leader].metrics_port
            assert port
            m = await asyncio.to_thread(_scrape, port)
            labels = f'group="t",node="{leader}"'
            assert m[f'dledger_role{{{labels},role="leader"}}'] == 1.0
            assert m[f'dledger_role{{{labels},role="follower"}}'] == 0.0
            assert m[f"dledger_commit_index{{{labels}}}"] >= 11  # no-op + 10 entries
            assert m['dledger_append_latency_seconds_count{outcome="ok"}'] == 5
            assert m['dledger_read_index_latency_seconds_count{outcome="ok"}'] == 1
            assert m["dledger_append_batch_entries_sum"] == 10
            assert m["dledger_commit_latency_seconds_count"] == 5
            assert m[f"dledger_bytes_persisted_total{{{labels}}}"] >= 10  # ten 1-byte entries
            assert m[f"dledger_leader_changes_total{{{labels}}}"] >= 1
            assert m[f"dledger_elections_total{{{labels}}}"] >= 1  # the leader was a candidate once
            serving = health_pb2.HealthCheckResponse.SERVING
            for node_id in group.peers:
                await group.wait_for(lambda n=node_id: group.servers[n].node.node_status().healthy, what="healthy")
            assert await _health_becomes(group.peers[leader], serving) == serving
            assert await _health_becomes(group.peers[leader], serving, "dledger.v1.DLedgerClientService") == serving
        finally:
            await group.stop_all()

    asyncio.run(main())


def test_a_lone_node_without_a_quorum_is_not_serving(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        peers = peers_for(["n0", "n1", "n2"])
        server = DLedgerServer(NodeConfig(self_id="n0", peers=peers, store_dir=tmp_path / "n0"))
        await server.start()
        try:
            await asyncio.sleep(0)  # the health task publishes its first status on its first run
            for _ in range(100):
                status = await _health(peers["n0"])
                if status != health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
                    break
                await asyncio.sleep(0.01)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            await server.stop()

    asyncio.run(main())


def test_node_log_records_carry_node_id_and_term(tmp_path: pathlib.Path) -> None:
    group = ProcessGroup(tmp_path, ids=("n0",))
    try:
        group.start("n0")
        wait_for(lambda: "is leader in term" in group.log_text("n0"), what="n0 leads")
        line = next(x for x in group.log_text("n0").splitlines() if "is leader in term" in x)
        assert "[n0 t1]" in line
    finally:
        group.stop_all()
