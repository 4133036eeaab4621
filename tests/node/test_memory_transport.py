"""A 3-node group in one process on the in-memory hub (no socket: peers through the hub, clients through
`MemoryStubs`), and the hub's own promises: listener checks, partitions, snapshot chunks, client calls."""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import grpc
import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from dledger.node.state_machine import ListStateMachine
from dledger.node.transport import PeerServicer
from dledger.storage_api import EntryKind
from dledger.testing.memory_client import MemoryStubs
from dledger.testing.memory_transport import MemoryHub, MemoryTransport
from tests.node.cluster_util import LocalGroup, memory_peers, run_group
from tests.support import wait_for_async

IDS = ("n0", "n1", "n2")


def normal_data(group: LocalGroup, node_id: str) -> list[bytes]:
    return [e.data for e in group.machines[node_id].applied if e.kind == EntryKind.NORMAL]


def delivered(hub: MemoryHub) -> int:
    return sum(n for (_, _, kind), n in hub.stats.items() if kind == "delivered")


def test_a_group_on_the_hub_elects_and_replicates_without_any_socket(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = MemoryHub()

    def no_grpc(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a node or client on the hub opened a gRPC server or channel")

    for name in ("server", "insecure_channel", "secure_channel"):
        monkeypatch.setattr(grpc.aio, name, no_grpc)

    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        assert all(isinstance(s.node.transport, MemoryTransport) for s in group.servers.values())
        assert all(s.peer_servicer.rejected == {} for s in group.servers.values())
        async with group.client() as client, group.client(streaming=False) as unary:
            for k in range(10):
                await client.append(f"v{k}".encode())  # the AppendStream path
            last = [await unary.append(f"v{k}".encode()) for k in range(10, 20)][-1]
            assert client.leader == leader and unary.leader == leader
            assert (await client.get(last.index)).data == b"v19"
        expected = [f"v{k}".encode() for k in range(20)]
        for node_id in IDS:
            await group.wait_for(
                partial(lambda n: normal_data(group, n) == expected, node_id), what=f"{node_id} applied"
            )
        assert delivered(hub) > 0
        assert not any(kind.startswith("dropped") for (_, _, kind) in hub.stats)

    run_group(tmp_path, body, hub=hub)


def test_a_cut_off_leader_is_replaced_and_heals_without_losing_acknowledged_entries(tmp_path: pathlib.Path) -> None:
    hub = MemoryHub()

    async def body(group: LocalGroup) -> None:
        old = await group.wait_for_leader()
        acked: list[tuple[int, bytes]] = []
        async with group.client() as client:
            for k in range(10):
                acked.append(((await client.append(f"before{k}".encode())).index, f"before{k}".encode()))
        hub.isolate(old, IDS)
        # the old leader takes a write it cannot commit: it must never be acknowledged
        stranded = group.servers[old].node.submit([b"stranded"])
        rest = [i for i in IDS if i != old]

        def new_leader() -> str | None:
            leaders = [i for i in rest if group.servers[i].node.role == "leader"]
            return leaders[0] if leaders else None

        new = await group.wait_for(new_leader, timeout=20, what="a leader among the majority")
        majority = {i: group.peers[i] for i in rest}
        async with group.client(majority) as client:
            for k in range(10):
                acked.append(((await client.append(f"during{k}".encode())).index, f"during{k}".encode()))
        assert not stranded.done() or stranded.exception() is not None
        assert hub.stats[new, old, "dropped_cut"] + hub.stats[old, new, "dropped_cut"] > 0

        hub.heal_all()
        await group.wait_for(lambda: stranded.done(), timeout=20, what="the stranded write settled")
        assert stranded.exception() is not None
        want = [data for _, data in acked]
        for node_id in IDS:
            await group.wait_for(
                partial(lambda n: [d for d in normal_data(group, n) if d != b"stranded"] == want, node_id),
                timeout=20,
                what=f"{node_id} applied every acknowledged entry",
            )
        async with group.client() as client:
            for index, data in acked:
                assert (await client.get(index)).data == data
        for node_id in IDS:
            assert b"stranded" not in normal_data(group, node_id)
            indexes = [e.index for e in group.machines[node_id].applied]
            assert indexes == list(range(1, len(indexes) + 1))

    run_group(tmp_path, body, hub=hub)


def _config(tmp_path: pathlib.Path, node_id: str) -> NodeConfig:
    peers = {i: f"127.0.0.1:{k + 1}" for k, i in enumerate(IDS)}
    return NodeConfig(self_id=node_id, peers=peers, store_dir=tmp_path / node_id, group="t")


def test_the_hub_applies_the_listener_checks_keeps_order_and_honours_cuts(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        hub = MemoryHub()
        got: dict[str, list[pb.PeerMessage]] = {i: [] for i in IDS}
        servicers = {i: PeerServicer("t", i, got[i].extend) for i in IDS}
        transports = {i: MemoryTransport(hub, _config(tmp_path, i), servicers[i]) for i in IDS}
        for t in transports.values():
            t.start()

        def vote(frm: str, to: str, term: int, group: str = "t") -> pb.PeerMessage:
            return pb.PeerMessage(group=group, from_id=frm, to_id=to, request_vote=pb.RequestVote(term=term))

        transports["n0"].send("n1", [vote("n0", "n1", t) for t in range(1, 6)])
        transports["n0"].send("n1", [vote("n0", "n1", 9, group="other")])  # another group
        transports["n0"].send("n1", [vote("n2", "n1", 9)])  # claims to come from n2
        transports["n0"].send("n1", [vote("n0", "n2", 9)])  # addressed to n2
        transports["n0"].send("n9", [vote("n0", "n9", 9)])  # not a peer
        await wait_for_async(lambda: hub.stats["n0", "n1", "rejected"] == 3, 5, "three refusals")
        assert [m.request_vote.term for m in got["n1"]] == [1, 2, 3, 4, 5]
        assert set(servicers["n1"].rejected) == {"message"}
        assert transports["n0"].stats["dropped_unknown_peer"] == 1

        hub.cut("n0", "n1")
        assert not transports["n0"].connected("n1") and not transports["n1"].connected("n0")
        assert transports["n0"].connected("n2")
        transports["n0"].send("n1", [vote("n0", "n1", 7)])
        transports["n1"].send("n0", [vote("n1", "n0", 7)])
        await asyncio.sleep(0.05)
        assert len(got["n1"]) == 5 and got["n0"] == []
        assert hub.stats["n0", "n1", "dropped_cut"] == 1 and hub.stats["n1", "n0", "dropped_cut"] == 1
        hub.heal("n0", "n1")
        transports["n0"].send("n1", [vote("n0", "n1", 8)])
        await wait_for_async(lambda: len(got["n1"]) == 6, 5, "delivery after healing")

        await transports["n2"].close()
        assert not transports["n0"].connected("n2")
        transports["n0"].send("n2", [vote("n0", "n2", 1)])
        assert hub.stats["n0", "n2", "dropped_down"] == 1 and got["n2"] == []

    asyncio.run(main())


def test_snapshot_chunks_reach_the_inbox_only_over_a_live_link_with_a_true_envelope(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        hub = MemoryHub()
        chunks: list[pb.SnapshotChunk] = []

        async def on_chunk(chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
            chunks.append(chunk)
            return pb.SnapshotAck(ok=True, next_offset=chunk.offset + len(chunk.data))

        n0 = MemoryTransport(hub, _config(tmp_path, "n0"), PeerServicer("t", "n0", lambda m: None))
        n1 = MemoryTransport(hub, _config(tmp_path, "n1"), PeerServicer("t", "n1", lambda m: None, on_chunk))
        n0.start()
        n1.start()
        chunk = pb.SnapshotChunk(group="t", from_id="n0", to_id="n1", term=2, data=b"abc")
        ack = await n0.send_snapshot_chunk("n1", chunk, timeout=5)
        assert ack.ok and ack.next_offset == 3 and chunks == [chunk] and chunks[0] is not chunk
        with pytest.raises(PermissionError, match="snapshot from 'n2'"):
            await n0.send_snapshot_chunk("n1", pb.SnapshotChunk(group="t", from_id="n2", to_id="n1"), timeout=5)
        with pytest.raises(PermissionError, match="group"):
            await n0.send_snapshot_chunk("n1", pb.SnapshotChunk(group="x", from_id="n0", to_id="n1"), timeout=5)
        hub.cut("n0", "n1")
        with pytest.raises(ConnectionError):
            await n0.send_snapshot_chunk("n1", chunk, timeout=5)
        with pytest.raises(LookupError):
            await n0.send_snapshot_chunk("n9", chunk, timeout=5)
        assert len(chunks) == 1

    asyncio.run(main())


def test_the_hub_builds_only_nodes_without_a_peer_listener(tmp_path: pathlib.Path) -> None:
    config = NodeConfig(
        self_id="n0", peers={"n0": "127.0.0.1:1"}, store_dir=tmp_path / "n0", group="t", peer_transport="tcp"
    )
    with pytest.raises(ValueError, match="tcp"):
        MemoryHub().server(config)
    grpc_peers = NodeConfig(self_id="n0", peers={"n0": "127.0.0.1:1"}, store_dir=tmp_path / "n0", group="t")
    with pytest.raises(ValueError, match="in-process peer transport"):  # its peers could never reach it
        DLedgerServer(grpc_peers, grpc_endpoint=False)


def test_a_follower_cut_off_past_compaction_catches_up_by_a_snapshot_over_the_hub(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        hub = MemoryHub()
        peers = memory_peers(IDS)
        machines = {i: ListStateMachine() for i in IDS}
        small: dict[str, Any] = {"segment_bytes": 16384, "snapshot_chunk_bytes": 4096}  # several segments and chunks
        servers = {
            i: hub.server(NodeConfig(self_id=i, peers=peers, store_dir=tmp_path / i, group="t", **small), [machines[i]])
            for i in IDS
        }
        for server in servers.values():
            await server.start()
        try:

            def leader() -> str | None:
                leaders = [i for i, s in servers.items() if s.is_leader]
                return leaders[0] if len(leaders) == 1 else None

            first = await wait_for_async(leader, 20, "a leader")
            follower = next(i for i in IDS if i != first)
            await servers[first].append([b"early"] * 5)
            await wait_for_async(lambda: len(machines[follower].entries) == 5, 10, "follower applied")
            hub.isolate(follower, IDS)
            for k in range(20):
                await servers[first].append([f"missed-{k}-{j}".encode() * 40 for j in range(8)])
            for node_id, server in servers.items():
                if node_id != follower:
                    caught_up = partial(lambda s: s.applied_index == servers[first].commit_index, server)
                    await wait_for_async(caught_up, 10, f"{node_id} applied")
                    assert await server.compact(server.commit_index) > 6
            hub.heal_all()
            now = await wait_for_async(leader, 20, "a leader after healing")
            await servers[now].append([b"after"])
            want = machines[now].entries
            await wait_for_async(lambda: machines[follower].entries == want, 20, "the follower caught up")
            assert servers[follower].node.stats.snapshots_installed == 1
            assert sum(n for (_, to, kind), n in hub.stats.items() if to == follower and kind == "delivered_chunks") > 0
        finally:
            for server in servers.values():
                await server.stop(grace=0)

    asyncio.run(main())


def test_nodes_on_different_event_loops_exchange_messages_and_chunks(tmp_path: pathlib.Path) -> None:
    """A node on another thread's loop (as `SyncDLedgerServer` runs one) gets its messages on that loop."""
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        hub = MemoryHub()
        seen_on: list[threading.Thread] = []
        got: list[pb.PeerMessage] = []

        def on_messages(messages: Sequence[pb.PeerMessage]) -> None:
            seen_on.append(threading.current_thread())
            got.extend(messages)

        async def on_chunk(chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
            seen_on.append(threading.current_thread())
            return pb.SnapshotAck(ok=True, next_offset=len(chunk.data))

        n1 = MemoryTransport(hub, _config(tmp_path, "n1"), PeerServicer("t", "n1", on_messages, on_chunk))

        async def start_n1() -> None:
            n1.start()

        asyncio.run_coroutine_threadsafe(start_n1(), other).result(5)

        async def main() -> None:
            n0 = MemoryTransport(hub, _config(tmp_path, "n0"), PeerServicer("t", "n0", lambda m: None))
            n0.start()
            vote = pb.PeerMessage(group="t", from_id="n0", to_id="n1", request_vote=pb.RequestVote(term=3))
            n0.send("n1", [vote, vote.SerializeToString()])
            await wait_for_async(lambda: len(got) == 2, 5, "delivery on the other loop")
            chunk = pb.SnapshotChunk(group="t", from_id="n0", to_id="n1", data=b"xy")
            assert (await n0.send_snapshot_chunk("n1", chunk, timeout=5)).next_offset == 2

        asyncio.run(main())
        assert seen_on == [thread, thread]
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()


def test_memory_stubs_answer_as_a_connection_would(tmp_path: pathlib.Path) -> None:
    """A stopped node is never ready and refuses calls as UNAVAILABLE; a call that cannot finish in time fails
    as DEADLINE_EXCEEDED; an open AppendStream breaks when its node stops; another loop is refused."""
    hub = MemoryHub()

    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        follower = next(i for i in IDS if i != leader)
        stubs = MemoryStubs(hub)
        assert await stubs.ready(leader, 1.0)
        status = await stubs.stub(leader, group.peers[leader]).Status(pb.StatusRequest(group="t"), timeout=5)
        assert status.node.role == "leader"
        stream = stubs.stub(follower, group.peers[follower]).AppendStream()
        await group.stop(follower)
        assert not await stubs.ready(follower, 1.0)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.stub(follower, "").Status(pb.StatusRequest(group="t"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await stream.write(pb.AppendStreamRequest())
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        hub.isolate(leader, IDS)  # a leader cut from its group cannot confirm a read
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stubs.stub(leader, "").ReadIndex(pb.ReadIndexRequest(group="t"), timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.to_thread(asyncio.run, stubs.ready(leader, 1.0))

    run_group(tmp_path, body, hub=hub)
