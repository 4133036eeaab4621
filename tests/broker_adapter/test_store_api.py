"""The MessageStore API on a one-replica group: statuses, bad input, tags, queries, timestamps, topics."""

from __future__ import annotations

import pathlib

from dledger.broker_adapter import GetStatus, Message, MessageStore, MessageType, PullStatus, PutStatus
from dledger.broker_adapter.reader import MAX_SCAN
from tests.broker_adapter.group_util import FakeClock
from tests.broker_adapter.single_util import run_single
from tests.support import wait_for_async


def test_put_assigns_consecutive_offsets_and_get_reads_them_back(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 2)
        first = await store.put_messages([Message("T", f"m{k}".encode(), queue_id=1) for k in range(5)])
        assert first.status is PutStatus.PUT_OK
        assert first.queue_offsets == (0, 1, 2, 3, 4) and first.queue_id == 1
        assert len(set(first.msg_ids)) == 5
        clock.advance(10)
        second = await store.put_message(Message("T", b"m5", queue_id=1))
        assert second.queue_offset == 5 and second.log_index == first.log_index + 1
        assert second.store_timestamp == clock.now
        got = await store.get_messages("G", "T", 1, 2, max_count=3)
        assert got.status is GetStatus.FOUND and got.pull_status is PullStatus.FOUND
        assert [m.message.body for m in got.messages] == [b"m2", b"m3", b"m4"]
        assert [m.queue_offset for m in got.messages] == [2, 3, 4]
        assert got.next_offset == 5 and (got.min_offset, got.max_offset) == (0, 6)
        assert got.messages[0].message.msg_id == first.msg_ids[2]
        # max_bytes stops the batch (but at least one message comes back)
        small = await store.get_messages("G", "T", 1, 0, max_count=32, max_bytes=1)
        assert [m.queue_offset for m in small.messages] == [0] and small.next_offset == 1
        assert (store.min_offset("T", 1), store.max_offset("T", 1)) == (0, 6)
        assert store.max_offset("T", 0) == 0

    run_single(tmp_path, body)


def test_get_statuses_follow_rocketmq(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 2)
        assert (await store.get_messages("G", "nope", 0, 0)).status is GetStatus.NO_MATCHED_LOGIC_QUEUE
        assert (await store.get_messages("G", "T", 5, 0)).status is GetStatus.NO_MATCHED_LOGIC_QUEUE
        empty = await store.get_messages("G", "T", 0, 0)
        assert empty.status is GetStatus.NO_MESSAGE_IN_QUEUE and empty.pull_status is PullStatus.NO_NEW_MSG
        await store.put_messages([Message("T", b"x", queue_id=0)] * 3)
        one = await store.get_messages("G", "T", 0, 3)
        assert one.status is GetStatus.OFFSET_OVERFLOW_ONE and one.next_offset == 3
        assert one.pull_status is PullStatus.NO_NEW_MSG
        badly = await store.get_messages("G", "T", 0, 9)
        assert badly.status is GetStatus.OFFSET_OVERFLOW_BADLY and badly.pull_status is PullStatus.OFFSET_ILLEGAL
        assert badly.next_offset == 0  # corrected to the min offset, as RocketMQ does when min is 0

    run_single(tmp_path, body)


def test_tag_filtering(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 1)
        tags = ["A", "B", "", "A", "C", "B"]
        await store.put_messages([Message("T", f"{k}".encode(), queue_id=0, tags=t) for k, t in enumerate(tags)])
        only_a = await store.get_messages("G", "T", 0, 0, tag_filter="A")
        assert [m.message.body for m in only_a.messages] == [b"0", b"3"] and only_a.next_offset == 6
        a_or_c = await store.get_messages("G", "T", 0, 0, max_count=2, tag_filter="A || C")
        assert [m.queue_offset for m in a_or_c.messages] == [0, 3] and a_or_c.next_offset == 4
        everything = await store.get_messages("G", "T", 0, 0, tag_filter="*")
        assert len(everything.messages) == 6
        none = await store.get_messages("G", "T", 0, 0, tag_filter=["Z"])
        assert none.status is GetStatus.NO_MATCHED_MESSAGE and none.pull_status is PullStatus.NO_MATCHED_MSG
        assert none.next_offset == 6  # the scanned records are skipped, not re-read

    run_single(tmp_path, body)


def test_a_long_run_of_unmatched_messages_is_scanned_in_bounded_steps(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 1)
        n = MAX_SCAN + 50
        for start in range(0, n, 200):
            await store.put_messages([Message("T", b"x", queue_id=0, tags="A")] * min(200, n - start))
        await store.put_message(Message("T", b"hit", queue_id=0, tags="B"))
        first = await store.get_messages("G", "T", 0, 0, tag_filter="B")
        assert first.status is GetStatus.NO_MATCHED_MESSAGE and first.next_offset == MAX_SCAN
        second = await store.get_messages("G", "T", 0, first.next_offset, tag_filter="B")
        assert [m.message.body for m in second.messages] == [b"hit"]

    run_single(tmp_path, body)


def test_query_by_key_and_id_and_timestamp(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 1)
        await store.create_topic("U", 1)
        ids = []
        stamps = []
        for k in range(6):
            clock.advance(100)
            stamps.append(clock.now)
            keys = ("order-1",) if k % 2 == 0 else ("order-2", "x")
            r = await store.put_message(Message("T", f"b{k}".encode(), keys=keys, msg_id=f"ID{k}"))
            ids.append(r.msg_id)
        await store.put_message(Message("U", b"other topic", keys=("order-1",)))
        hits = await store.query_by_key("T", "order-1")
        assert [m.message.body for m in hits] == [b"b0", b"b2", b"b4"]
        assert [m.queue_offset for m in hits] == [0, 2, 4]
        assert [m.message.body for m in await store.query_by_key("T", "order-1", max_count=2)] == [b"b2", b"b4"]
        ranged = await store.query_by_key("T", "order-2", begin_ms=stamps[2], end_ms=stamps[4])
        assert [m.message.body for m in ranged] == [b"b3"]
        assert await store.query_by_key("T", "missing") == []
        assert ids == [f"ID{k}" for k in range(6)]
        found = await store.query_by_id("ID3")
        assert found is not None and found.message.body == b"b3" and found.queue_offset == 3
        assert found.store_timestamp == stamps[3]
        assert await store.query_by_id("nope") is None
        assert store.offset_for_timestamp("T", 0, stamps[2]) == 2
        assert store.offset_for_timestamp("T", 0, stamps[2] + 1) == 3
        assert store.offset_for_timestamp("T", 0, 0) == 0
        assert store.offset_for_timestamp("T", 0, stamps[5] + 1) == 6

    run_single(tmp_path, body)


def test_bad_input_gets_a_clear_status_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 2)
        before = store._srv().status().last_index
        cases = [
            ([Message("", b"x")], PutStatus.MESSAGE_ILLEGAL, "topic is empty"),
            ([Message("bad topic!", b"x")], PutStatus.MESSAGE_ILLEGAL, "must be"),
            ([Message("T", b"")], PutStatus.MESSAGE_ILLEGAL, "body is empty"),
            ([Message("T", b"x" * 2000)], PutStatus.MESSAGE_ILLEGAL, "maxMessageSize"),
            ([Message("T", b"x", queue_id=2)], PutStatus.MESSAGE_ILLEGAL, "queue 2 does not exist"),
            ([Message("T", b"ok"), Message("T", b"x", queue_id=7)], PutStatus.MESSAGE_ILLEGAL, "message 1"),
            ([], PutStatus.MESSAGE_ILLEGAL, "empty batch"),
        ]
        for batch, status, reason in cases:
            result = await store.put_messages(batch)
            assert result.status is status and reason in result.reason, (batch, result)
        assert store._srv().status().last_index == before  # nothing reached the log
        assert store.max_offset("T", 0) == 0

    run_single(tmp_path, body, max_message_bytes=1000)


def test_topics_auto_create_and_explicit(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        r = await store.put_message(Message("Auto", b"x"))
        assert r.ok
        auto = store.topic("Auto")
        assert auto is not None and auto.queue_count == 3 and auto.message_type is MessageType.MIXED  # any type
        fifo = await store.put_message(Message("AutoFifo", b"x", message_group="g1"))
        assert fifo.ok and store.topic("AutoFifo").message_type is MessageType.MIXED  # type: ignore[union-attr]
        cfg = await store.create_topic("Auto", 5, MessageType.FIFO)
        assert cfg.queue_count == 5 and cfg.message_type is MessageType.MIXED  # grows; type fixed at creation
        assert (await store.create_topic("Auto", 2)).queue_count == 5  # never shrinks
        assert sorted(t.name for t in store.topics()) == ["Auto", "AutoFifo"]

    run_single(tmp_path, body, default_queue_count=3)


def test_auto_create_disabled_refuses_unknown_topics(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        r = await store.put_message(Message("Nope", b"x"))
        assert r.status is PutStatus.TOPIC_NOT_FOUND and store.topic("Nope") is None

    run_single(tmp_path, body, auto_create_topic=False)


def test_disk_over_the_hard_limit_refuses_writes_whole(tmp_path: pathlib.Path) -> None:
    ratio = [0.5]

    async def body(store: MessageStore, clock: FakeClock) -> None:
        assert (await store.put_message(Message("T", b"before"))).ok
        last = store._srv().status().last_index
        ratio[0] = 0.95
        full = await store.put_messages([Message("T", b"x")] * 10)
        assert full.status is PutStatus.DISK_FULL and "hard limit" in full.reason
        assert store._srv().status().last_index == last and store.max_offset("T", 0) + store.max_offset("T", 1) == 1
        ratio[0] = 0.89
        assert (await store.put_message(Message("T", b"after"))).ok

    run_single(tmp_path, body, disk_usage=lambda _: ratio[0], default_queue_count=2)


def test_transactional_messages_are_invisible_until_committed(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("Tx", 1, MessageType.TRANSACTION)
        a = await store.put_message(Message("Tx", b"a", transaction=True))
        b = await store.put_message(Message("Tx", b"b", transaction=True))
        assert a.ok and a.queue_offset == -1 and store.max_offset("Tx", 0) == 0
        assert await store.end_transaction(b.msg_id, commit=True)
        assert await store.end_transaction(a.msg_id, commit=False)
        assert not await store.end_transaction(a.msg_id, commit=True)  # already resolved
        got = await store.get_messages("G", "Tx", 0, 0)
        assert [m.message.body for m in got.messages] == [b"b"]
        found = await store.query_by_id(b.msg_id)
        assert found is not None and found.queue_offset == 0

    run_single(tmp_path, body)


def test_delay_messages_become_visible_at_their_delivery_time(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("D", 1, MessageType.DELAY)
        late = await store.put_message(Message("D", b"late", delivery_timestamp=clock.now + 5000))
        early = await store.put_message(Message("D", b"early", delivery_timestamp=clock.now + 1000))
        now = await store.put_message(Message("D", b"now"))
        assert late.queue_offset == -1 and early.queue_offset == -1 and now.queue_offset == 0
        assert store.max_offset("D", 0) == 1
        clock.advance(1000)  # the master's timer proposes a TICK; every replica releases what is due
        await wait_for_async(lambda: store.max_offset("D", 0) == 2, what="delayed messages released")
        clock.advance(4000)
        await wait_for_async(lambda: store.max_offset("D", 0) == 3, what="delayed messages released")
        got = await store.get_messages("G", "D", 0, 0)
        assert [m.message.body for m in got.messages] == [b"now", b"early", b"late"]
        assert [m.store_timestamp for m in got.messages][1:] == [clock.now - 4000, clock.now]
        found = await store.query_by_id(late.msg_id)
        assert found is not None and found.queue_offset == 2

    run_single(tmp_path, body)


