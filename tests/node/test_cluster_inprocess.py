"""A 3-node group of DLedgerServers in one process: peers and clients over real gRPC on loopback, or (where
the test is about the runtime, not the wire) through the in-memory hub, with no socket at all."""

from __future__ import annotations

import pathlib

import pytest

from dledger.client.client_policy import EntryNotFoundError, InvalidRequestError
from dledger.node.errors import NodeNotLeaderError
from dledger.storage_api import EntryKind
from dledger.testing.memory_transport import MemoryHub
from tests.node.cluster_util import LocalGroup, run_group

IDS = ("n0", "n1", "n2")


def normal_data(group: LocalGroup, node_id: str) -> list[bytes]:
    return [e.data for e in group.machines[node_id].applied if e.kind == EntryKind.NORMAL]


def test_elects_a_leader_and_replicates_to_every_state_machine(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        async with group.client() as client:
            results = [await client.append(f"v{k}".encode()) for k in range(20)]
            batch = await client.append_batch([b"b1", b"b2", b"b3"])
            assert client.leader == leader
            assert [r.index for r in results] == sorted({r.index for r in results})
            assert [r.index for r in batch] == [batch[0].index + k for k in range(3)]
            expected = [f"v{k}".encode() for k in range(20)] + [b"b1", b"b2", b"b3"]
            for node_id in IDS:
                await group.wait_for(lambda n=node_id: normal_data(group, n) == expected, what=f"{node_id} applied")
            entry = await client.get(batch[2].index)
            assert entry.data == b"b3" and entry.term == batch[2].term
            assert await client.read_index() >= batch[2].index
            with pytest.raises(EntryNotFoundError):
                await client.get(10_000)
            status = {s.id: s for s in await client.status()}
            assert {s.role for s in status.values()} == {"leader", "follower"}
            assert all(s.leader_id == leader and s.healthy for s in status.values())
            # every index applied exactly once, in order, on every node
            for node_id in IDS:
                indexes = [e.index for e in group.machines[node_id].applied]
                assert indexes == list(range(1, len(indexes) + 1))

    run_group(tmp_path, body)


def test_follower_restart_catches_up_and_resumes_applying(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        follower = next(i for i in IDS if i != leader)
        async with group.client() as client:
            await client.append_batch([b"a", b"b"])
            await group.wait_for(lambda: len(normal_data(group, follower)) == 2, what="follower applied")
            applied_before = group.machines[follower].applied[-1].index
            await group.stop(follower)
            for k in range(30):
                await client.append(f"while-down-{k}".encode())
            # restart: the state machine says it applied everything up to applied_before
            await group.start(follower, resume_at=applied_before)
            await group.wait_for(lambda: len(normal_data(group, follower)) == 30, what="restarted follower caught up")
            assert group.machines[follower].applied[0].index == applied_before + 1

    run_group(tmp_path, body, hub=MemoryHub())


def test_leader_stop_elects_a_new_leader_without_losing_acknowledged_entries(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        old = await group.wait_for_leader()
        async with group.client() as client:
            acked = [(await client.append(f"x{k}".encode())).index for k in range(10)]
            await group.stop(old)
            new = await group.wait_for_leader()
            assert new != old
            more = await client.append(b"after")
            assert more.index > acked[-1]
            for index, k in zip(acked, range(10), strict=True):
                assert (await client.get(index)).data == f"x{k}".encode()

    run_group(tmp_path, body, hub=MemoryHub())


def test_oversized_entry_is_refused(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        await group.wait_for_leader()
        async with group.client() as client:
            with pytest.raises(InvalidRequestError):
                await client.append(b"x" * 70_000)

    run_group(tmp_path, body, hub=MemoryHub(), max_entry_bytes=65_536)


def test_a_get_right_after_the_append_finds_the_entry_whichever_node_it_asks(tmp_path: pathlib.Path) -> None:
    """A follower learns a commit a heartbeat late: past its commit index it sends the client to the leader,
    which alone may say "not committed" (after a ReadIndex round), so an acknowledged entry is never denied."""

    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        follower = next(i for i in IDS if i != leader)
        async with (
            group.client() as writer,
            group.client({follower: group.peers[follower], **group.peers}) as reader,
        ):
            for k in range(20):
                result = await writer.append(f"r{k}".encode())
                data = f"r{k}".encode()
                try:  # the follower itself: the entry, or "ask the leader"; never "not found"
                    assert (await group.servers[follower].node.get(result.index)).data == data
                except NodeNotLeaderError as exc:
                    assert exc.hint.leader_id == leader
                assert (await reader.get(result.index)).data == data
            far = result.index + 1000
            with pytest.raises(NodeNotLeaderError) as caught:  # the follower does not say "not found"...
                await group.servers[follower].node.get(far)
            assert caught.value.hint.leader_id == leader
            with pytest.raises(EntryNotFoundError):  # ...the leader does
                await reader.get(far)

    run_group(tmp_path, body, hub=MemoryHub())
