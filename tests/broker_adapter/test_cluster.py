"""Three replicas in one process: failover without losing acknowledged messages or consumer state, identical
tables on every replica, tables rebuilt from the log, role callbacks, follower reads and NOT_LEADER."""

from __future__ import annotations

import asyncio
import pathlib
import shutil

from dledger.broker_adapter import AckStatus, GetStatus, Message, MessageStore, PopStatus, PutStatus
from dledger.storage_api import EntryKind
from tests.broker_adapter.group_util import BrokerGroup, dump, run_group


async def queue_contents(store: MessageStore, topic: str, queues: int) -> dict[int, list[str]]:
    """Every message id of every queue, in offset order (all of them: the reads must not come back short)."""
    out: dict[int, list[str]] = {}
    for q in range(queues):
        ids = out[q] = []
        offset = 0
        while (got := await store.get_messages("check", topic, q, offset, max_count=500)).status is GetStatus.FOUND:
            assert [m.queue_offset for m in got.messages] == list(range(offset, got.next_offset))
            ids += [m.message.msg_id for m in got.messages]
            offset = got.next_offset
        assert got.status is GetStatus.OFFSET_OVERFLOW_ONE or (got.status is GetStatus.NO_MESSAGE_IN_QUEUE and not ids)
        assert len(ids) == store.max_offset(topic, q)
    return out


async def wait_same_tables(group: BrokerGroup) -> None:
    master = await group.wait_for_master()
    await group.wait_applied(master.last_applied())
    dumps = {node_id: dump(s) for node_id, s in group.stores.items()}
    reference = next(iter(dumps.values()))
    for node_id, tables in dumps.items():
        for name in reference:
            assert tables[name] == reference[name], f"{node_id}: table {name} differs"


def test_leader_stop_mid_stream_loses_no_acknowledged_message_and_every_replica_agrees(tmp_path: pathlib.Path) -> None:
    """The leader is stopped cleanly (in-process) while three producers write; a SIGKILL of a replica process
    is in test_crash.py."""

    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 4)
        acked: dict[str, tuple[int, int]] = {}
        statuses: list[PutStatus] = []
        stop = asyncio.Event()

        async def producer(name: str) -> None:
            k = 0
            while not stop.is_set():
                current = group.master()
                if current is None:
                    await asyncio.sleep(0.01)
                    continue
                batch = [Message("T", f"{name}-{k}-{j}".encode(), keys=(f"{name}-{k}",)) for j in range(3)]
                result = await group.stores[current].put_messages(batch)
                statuses.append(result.status)
                if result.ok:
                    positions = zip(result.queue_ids, result.queue_offsets, strict=True)
                    for msg_id, position in zip(result.msg_ids, positions, strict=True):
                        acked[msg_id] = position
                k += 1

        tasks = [asyncio.create_task(producer(f"p{n}")) for n in range(3)]
        await group.wait_for(lambda: len(acked) >= 90, what="messages before the stop")
        old = group.master()
        assert old is not None
        await group.stop(old)
        before_stop = len(acked)
        await group.wait_for(lambda: len(acked) >= before_stop + 90, timeout=15, what="messages after the stop")
        stop.set()
        await asyncio.gather(*tasks)
        assert set(statuses) <= {
            PutStatus.PUT_OK,
            PutStatus.NOT_LEADER,
            PutStatus.SERVICE_NOT_AVAILABLE,
            PutStatus.FLUSH_OR_REPLICA_TIMEOUT,
        }
        await group.start(old)  # the old leader comes back as a follower and catches up
        await wait_same_tables(group)
        for store in group.stores.values():
            contents = await queue_contents(store, "T", 4)
            for msg_id, (queue, offset) in acked.items():
                assert contents[queue][offset] == msg_id
            # offsets are dense: no gaps, every offset below max holds a message
            assert all(len(ids) == store.max_offset("T", q) for q, ids in contents.items())

    run_group(tmp_path, body)


def test_consumer_offsets_and_pop_state_survive_failover(tmp_path: pathlib.Path) -> None:
    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 1)
        await master.put_messages([Message("T", f"m{k}".encode()) for k in range(10)])
        await master.commit_offset("pull", "T", 0, 6)
        popped = await master.pop_messages("pop", "T", max_count=4, invisible_ms=60_000)
        assert len(popped.messages) == 4
        old = group.master()
        assert old is not None
        await group.stop(old)
        new = await group.wait_for_master()
        assert new is not master
        assert new.committed_offset("pull", "T", 0) == 6
        resumed = await new.get_messages("pull", "T", 0, new.committed_offset("pull", "T", 0))
        assert [m.message.body for m in resumed.messages] == [b"m6", b"m7", b"m8", b"m9"]
        # the in-flight messages stay invisible; the next receive continues after them
        after = await new.pop_messages("pop", "T", max_count=10, invisible_ms=60_000)
        assert [m.stored.queue_offset for m in after.messages] == [4, 5, 6, 7, 8, 9]
        ack = await new.ack_message("pop", popped.messages[0].receipt_handle)  # a handle from the old master
        assert ack.status is AckStatus.OK

    run_group(tmp_path, body)


def test_tables_are_rebuilt_from_the_log_after_deleting_the_lmdb_files(tmp_path: pathlib.Path) -> None:
    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 2)
        for k in range(5):
            await master.put_messages([Message("T", f"m{k}-{j}".encode(), keys=(f"k{k}",)) for j in range(4)])
        popped = await master.pop_messages("G", "T", max_count=3)
        await master.ack_message("G", popped.messages[0].receipt_handle)
        await master.commit_offset("G", "T", 1, 2)
        follower = next(i for i, s in group.stores.items() if s is not master)
        await group.stop(follower)
        await master.put_message(Message("T", b"while-down"))
        shutil.rmtree(tmp_path / follower / "broker")
        rebuilt = await group.start(follower)
        assert rebuilt.tables.applied() <= master.last_applied()
        await wait_same_tables(group)
        assert await queue_contents(rebuilt, "T", 2) == await queue_contents(master, "T", 2)
        hit = await rebuilt.query_by_key("T", "k3")
        assert [m.message.body for m in hit] == [f"m3-{j}".encode() for j in range(4)]
        assert rebuilt.committed_offset("G", "T", 1) == 2

    run_group(tmp_path, body)


def test_master_only_after_applying_its_term_and_followers_serve_reads(tmp_path: pathlib.Path) -> None:
    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        master_id = group.master()
        assert master_id is not None
        await master.put_messages([Message("T", b"x", queue_id=0)] * 3)
        role, index, term = group.events[master_id][-1]
        assert role == "master" and index == master.master_index
        entry = await master._srv().get(index)
        assert entry.kind == EntryKind.NOOP and entry.term == term  # its own term's no-op was applied
        for node_id, store in group.stores.items():
            if store is master:
                continue
            # the callback fires when the follower first hears of this leader (a heartbeat may still be on its way)
            await group.wait_for(
                lambda n=node_id: bool(group.events[n]) and group.events[n][-1][0] == "slave", what="told slave"
            )
            await group.wait_for(lambda s=store: s._srv().leader_id == master_id, what="follower knows the leader")
            refused = await store.put_message(Message("T", b"y"))
            assert refused.status is PutStatus.NOT_LEADER
            assert refused.leader_address == group.peers[master_id]
            assert (await store.pop_messages("G", "T")).status is PopStatus.NOT_LEADER
            await group.wait_for(lambda s=store: s.max_offset("T", 0) == 3, what="follower applied")
            got = await store.get_messages("G", "T", 0, 0)
            assert got.status is GetStatus.FOUND and len(got.messages) == 3

    run_group(tmp_path, body)
