"""Snapshots of a store built through the real API (topics, keys, offsets, Pop with invisible messages, FIFO,
transactions, delay): a fresh store restored from the image answers every query the same, continues from the
log to the same tables, and a replica whose log starts after the snapshot reads older bodies as removed."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from dledger.broker_adapter import AckStatus, GetStatus, Message, MessageStore, MessageType, PopStatus
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.pop import Delivery
from dledger.storage_api import Entry
from tests.broker_adapter.group_util import FakeClock, dump
from tests.broker_adapter.single_util import run_single
from tests.broker_adapter.snapshot_util import attach_log, image_of, restored, without_applied
from tests.support import wait_for_async

QUEUES = (("T", 0), ("T", 1), ("F", 0), ("Tx", 0), ("D", 0))


async def queries(store: MessageStore, ids: list[str]) -> dict[str, Any]:
    """Everything a client can ask the store, as comparable values."""
    out: dict[str, Any] = {"topics": sorted(store.topics(), key=lambda t: t.name)}
    for topic, queue in QUEUES:
        got = await store.get_messages("G", topic, queue, 0, max_count=100)
        out[f"{topic}/{queue}"] = (
            store.min_offset(topic, queue),
            store.max_offset(topic, queue),
            got.status,
            [(m.message.body, m.queue_offset, m.log_index, m.store_timestamp) for m in got.messages],
            store.committed_offset("G", topic, queue),
        )
    out["ids"] = [await store.query_by_id(i) for i in ids]
    out["keys"] = [await store.query_by_key("T", f"k{k}") for k in range(7)]
    return out


@dataclass
class Run:
    image: bytes = b""
    index: int = 0
    time_at: int = 0  # the master's clock at the snapshot
    at_snapshot: dict[str, Any] = field(default_factory=dict)
    tables_at: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    tables_final: dict[str, Any] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    ids_at: list[str] = field(default_factory=list)  # the ids known at the snapshot
    popped: list[bytes] = field(default_factory=list)
    extended: bytes = b""


def history(tmp_path: pathlib.Path) -> Run:
    run = Run()

    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 2)
        await store.create_topic("F", 1, MessageType.FIFO)
        await store.create_topic("Tx", 1, MessageType.TRANSACTION)
        await store.create_topic("D", 1, MessageType.DELAY)
        put = await store.put_messages(
            [Message("T", f"t{k}".encode(), queue_id=k % 2, keys=(f"k{k}",)) for k in range(6)]
        )
        run.ids += put.msg_ids
        fifo = [Message("F", b"f1a", message_group="g1"), Message("F", b"f2a", message_group="g2")]
        await store.put_messages([*fifo, Message("F", b"f1b", message_group="g1")])
        prepared = await store.put_message(Message("Tx", b"a", transaction=True))
        committed = await store.put_message(Message("Tx", b"b", transaction=True))
        assert await store.end_transaction(committed.msg_id, commit=True)
        delayed = await store.put_message(Message("D", b"late", delivery_timestamp=clock.now + 5000))
        run.ids += [*prepared.msg_ids, *committed.msg_ids, *delayed.msg_ids]
        await store.commit_offset("G", "T", 0, 1)
        got = await store.pop_messages("G", "T", max_count=3, invisible_ms=1000)
        assert len(got.messages) == 3
        run.popped = sorted(m.stored.message.body for m in got.messages)
        extended = got.messages[0]
        run.extended = extended.stored.message.body
        assert (await store.change_invisible_duration("G", extended.receipt_handle, 10_000)).status is AckStatus.OK
        fifo_got = await store.pop_messages("GF", "F", max_count=10, invisible_ms=1000)
        assert sorted(m.stored.message.body for m in fifo_got.messages) == [b"f1a", b"f2a"]

        run.image, run.index = image_of(store)
        run.time_at = clock.now
        assert run.index == store._srv().applied_index
        run.ids_at = list(run.ids)
        run.at_snapshot = await queries(store, run.ids_at)
        run.tables_at = dump(store)

        clock.advance(1000)
        again = await store.pop_messages("G", "T", max_count=10, invisible_ms=1000)
        assert again.status is PopStatus.FOUND
        assert await store.end_transaction(prepared.msg_id, commit=True)
        clock.advance(5000)
        await wait_for_async(lambda: store.max_offset("D", 0) == 1, what="the delayed message")
        put = await store.put_messages([Message("T", b"t6", queue_id=0, keys=("k6",))])
        run.ids += put.msg_ids
        await store.commit_offset("G", "T", 1, 2)
        srv = store._srv()
        run.entries = [await srv.get(i) for i in range(1, srv.applied_index + 1)]
        run.final = await queries(store, run.ids)
        run.tables_final = dump(store)

    run_single(tmp_path / "live", body)
    return run


def test_a_restored_store_answers_like_the_original_and_continues_from_the_log(tmp_path: pathlib.Path) -> None:
    import asyncio

    run = history(tmp_path)
    at = restored(tmp_path / "at", run.image, run.index)
    assert at.last_applied() == run.index
    assert without_applied(dump(at)) == without_applied(run.tables_at)
    attach_log(at, run.entries)
    assert asyncio.run(queries(at, run.ids_at)) == run.at_snapshot
    at.close()

    after = restored(tmp_path / "after", run.image, run.index)
    for entry in run.entries[run.index :]:
        after.apply(entry)
    assert dump(after) == run.tables_final
    attach_log(after, run.entries)
    assert asyncio.run(queries(after, run.ids)) == run.final
    after.close()


def pop_entry(store: MessageStore, index: int, nonce: int, now: int, group: str, topic: str) -> list[Delivery]:
    store.applier.wanted.add(nonce)
    cmd = c.PopReceive(nonce, now, group, topic, -1, 0, 10, 1000, 16, 0)
    store.apply(Entry(index, 9, c.encode_command(cmd)))
    out: list[Delivery] = store.applier.outcomes.pop(nonce)
    return out


def test_invisible_messages_come_back_after_a_restore_and_fifo_groups_stay_blocked(tmp_path: pathlib.Path) -> None:
    run = history(tmp_path)
    store = restored(tmp_path / "r", run.image, run.index)
    attach_log(store, run.entries)
    assert pop_entry(store, run.index + 1, 1, run.time_at, "GF", "F") == []  # f1b waits behind f1a
    redelivered = pop_entry(store, run.index + 2, 2, run.time_at + 1000, "G", "T")
    bodies = {run.entries[d.index - 1].data[d.pos : d.pos + d.size] for d in redelivered if d.attempt == 2}
    assert len(bodies) == 2 and not any(run.extended in b for b in bodies)  # the extended one is still invisible
    assert all(any(p in b for b in bodies) for p in run.popped if p != run.extended)
    fifo = pop_entry(store, run.index + 3, 3, run.time_at + 1000, "GF", "F")
    assert sorted((d.attempt, d.queue_offset) for d in fifo) == [(2, 0), (2, 1)]  # f1b still behind f1a
    store.close()


def test_a_replica_whose_log_starts_after_the_snapshot_reads_older_bodies_as_removed(tmp_path: pathlib.Path) -> None:
    import asyncio

    run = history(tmp_path)
    store = restored(tmp_path / "r", run.image, run.index)
    attach_log(store, run.entries, first_index=run.index + 1)

    async def check() -> None:
        assert store.min_offset("T", 0) == store.max_offset("T", 0) == 3  # as after retention
        got = await store.get_messages("G", "T", 0, 0)
        assert got.status is GetStatus.OFFSET_TOO_SMALL and got.messages == []
        assert (await store.get_messages("G", "T", 0, 3)).status is GetStatus.OFFSET_OVERFLOW_ONE
        assert [await store.query_by_id(i) for i in run.ids] == [None] * len(run.ids)
        assert await store.query_by_key("T", "k1") == []

    asyncio.run(check())
    for entry in run.entries[run.index :]:  # the log after the snapshot applies as usual
        store.apply(entry)
    assert dump(store) == run.tables_final

    async def check_after() -> None:
        got = await store.get_messages("G", "T", 0, 3, max_count=10)
        assert [m.message.body for m in got.messages] == [b"t6"]
        # the delayed message was released after the snapshot, but its body is in an entry before it: removed
        delayed = await store.get_messages("G", "D", 0, 0)
        assert (delayed.status, delayed.min_offset, delayed.max_offset) == (GetStatus.OFFSET_TOO_SMALL, 1, 1)
        assert await store.query_by_id(run.ids[-2]) is None

    asyncio.run(check_after())
    store.close()
