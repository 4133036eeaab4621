"""Runtime behaviour under faults and odd input: disk errors fence a node, garbage RPCs change nothing,
a node of another group is refused; plus leadership transfer, role callbacks and the sync facade."""

from __future__ import annotations

import asyncio
import errno
import pathlib
from collections.abc import Sequence

import grpc
import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client_policy import NotWrittenError, OutcomeUnknownError
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer, SyncDLedgerServer
from dledger.storage_api import Entry
from tests.node.cluster_util import LocalGroup, peers_for, run_group

IDS = ("n0", "n1", "n2")


def test_a_leader_that_cannot_write_is_fenced_and_never_acknowledges(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        old = await group.wait_for_leader()
        async with AsyncDLedgerClient(group.peers, group="t") as client:
            first = await client.append(b"ok-before")
            node = group.servers[old].node
            assert node.log is not None

            def disk_full(entries: Sequence[Entry]) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            node.log.append = disk_full  # type: ignore[method-assign]
            with pytest.raises((OutcomeUnknownError, NotWrittenError)):
                await client.append(b"during-the-fault", timeout=3)
            status = node.node_status()
            assert not status.healthy and "No space left" in status.error
            assert node.role == "fenced" and status.role == "fenced"
            new = await group.wait_for_leader()
            assert new != old
            after = await client.append(b"ok-after")
            assert after.index > first.index and client.leader == new
            assert (await client.get(first.index)).data == b"ok-before"
            for node_id in IDS:
                if node_id != old:
                    await group.wait_for(
                        lambda n=node_id: any(e.data == b"ok-after" for e in group.machines[n].applied),
                        what=f"{node_id} applied",
                    )

    run_group(tmp_path, body)


async def _raw_call(address: str, method: str, payload: bytes) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            await call(payload, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def test_garbage_rpcs_get_an_error_status_and_change_nothing(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        address = group.peers[leader]
        before = group.servers[leader].node.node_status()
        garbage = b"\xff\xff\xff\xff\x0f garbage that is not a protobuf"
        for method in ("/dledger.v1.DLedgerClientService/Append", "/dledger.v1.RaftPeer/Send"):
            assert await _raw_call(address, method, garbage) != grpc.StatusCode.OK
        assert await _raw_call(address, "/dledger.v1.Nope/Nothing", b"") == grpc.StatusCode.UNIMPLEMENTED
        after = group.servers[leader].node.node_status()
        assert (after.term, after.last_index, after.role) == (before.term, before.last_index, before.role)
        async with AsyncDLedgerClient(group.peers, group="t") as client:
            assert (await client.append(b"still fine")).index == before.last_index + 1

    run_group(tmp_path, body)


def test_a_node_of_another_group_is_refused(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        term = group.servers[leader].node.node_status().term
        rogue_peers = {**group.peers, "n3": f"127.0.0.1:{peers_for(['x'])['x'].rsplit(':', 1)[1]}"}
        # a node that believes it is in group "other" with our nodes as its peers, campaigning hard
        rogue = DLedgerServer(NodeConfig(self_id="n3", peers=rogue_peers, store_dir=tmp_path / "rogue", group="other",
                                         election_timeout_ms=40, heartbeat_ms=20))  # fmt: skip
        await rogue.start()
        try:
            await group.wait_for(
                lambda: sum(s.peer_servicer.rejected["message"] for s in group.servers.values()) >= 2,
                what="the rogue's messages refused",
            )
            assert group.leader() == leader
            assert group.servers[leader].node.node_status().term == term
        finally:
            await rogue.stop(grace=0)

    run_group(tmp_path, body)


def test_leadership_transfer_and_role_callbacks(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        old = await group.wait_for_leader()
        target = next(i for i in IDS if i != old)
        seen: list[tuple[str, int, str | None]] = []
        group.servers[target].on_role_change(lambda role, term, leader: seen.append((role, term, leader)))
        async with AsyncDLedgerClient(group.peers, group="t") as client:
            await client.append(b"x")
            await client.transfer_leadership(target)
            assert await group.wait_for_leader() == target
            assert ("leader", seen[-1][1], target) in seen
            assert (await client.append(b"y")).term == seen[-1][1]

    run_group(tmp_path, body)


def test_follower_answers_not_leader_with_the_leaders_address(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        follower = next(i for i in IDS if i != leader)
        await group.wait_for(lambda: group.servers[follower].node.node_status().leader_id == leader, what="known")
        async with grpc.aio.insecure_channel(group.peers[follower]) as channel:
            reply = await pb_grpc.DLedgerClientServiceStub(channel).Append(pb.AppendRequest(group="t", data=[b"x"]))
        assert reply.status == pb.STATUS_NOT_LEADER
        assert (reply.leader_id, reply.leader_address) == (leader, group.peers[leader])

    run_group(tmp_path, body)


def test_sync_facade_single_node(tmp_path: pathlib.Path) -> None:
    config = NodeConfig(self_id="solo", peers=peers_for(["solo"]), store_dir=tmp_path / "solo")
    with SyncDLedgerServer(config) as server:
        assert server.wait_for_leader() == "solo"
        index, _ = server.append([b"a", b"b"])
        assert server.get(index + 1).data == b"b"
        assert server.read_index() >= index + 1
        assert server.status().role == "leader"
    with SyncDLedgerServer(config) as server:  # reopens the same store
        server.wait_for_leader()
        assert server.get(index).data == b"a"


def test_compaction_never_passes_the_applied_index(tmp_path: pathlib.Path) -> None:
    config = NodeConfig(self_id="solo", peers=peers_for(["solo"]), store_dir=tmp_path / "solo", segment_bytes=4096)

    async def main() -> None:
        server = DLedgerServer(config)
        await server.start()
        try:
            await server.wait_for_leader()
            for k in range(40):
                await server.append([bytes([k]) * 300])
            assert len(server.segments()) > 3
            first = await server.compact(10**9)
            assert 1 < first <= server.applied_index
            assert server.segments()[0].first_index == first
            index, _ = await server.append([b"after"])
            assert (await server.get(index)).data == b"after"
        finally:
            await server.stop()

    asyncio.run(main())


def test_durable_report_never_claims_more_than_the_files_hold(tmp_path: pathlib.Path) -> None:
    import json

    config = NodeConfig(self_id="solo", peers=peers_for(["solo"]), store_dir=tmp_path / "solo", flush="sync")
    log_dir = tmp_path / "solo" / "log"

    async def main() -> None:
        server = DLedgerServer(config, durable_report_ms=10)
        await server.start()
        try:
            await server.wait_for_leader()
            for k in range(20):
                await server.append([bytes([k]) * 100])
            written = {s.name: s.bytes for s in server.segments()}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:  # sync flush: everything appended was fsynced, so the report reaches the end
                report = json.loads((log_dir / "DURABLE").read_text()) if (log_dir / "DURABLE").exists() else {}
                if {name: v[0] for name, v in report.items()} == written:
                    break
                assert loop.time() < deadline, f"report {report} never reached {written}"
                await asyncio.sleep(0.01)
            for name, (data_bytes, index_bytes) in report.items():
                assert data_bytes <= (log_dir / "data" / name).stat().st_size
                assert index_bytes <= (log_dir / "index" / name).stat().st_size
            assert sum(written.values()) == 20 * (48 + 100) + 48  # the entries and the leader's no-op
        finally:
            await server.stop()

    asyncio.run(main())
