"""Pop consumption on a one-replica store with a fake master clock: invisibility, ack, redelivery, change of
invisible time, dead letters, FIFO order per message group, delay, and a start at the committed offset."""

from __future__ import annotations

import pathlib

import pytest

from dledger.broker_adapter import AckStatus, Message, MessageStore, MessageType, PopStatus, PutStatus
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.results import StoreError
from tests.broker_adapter.group_util import FakeClock
from tests.broker_adapter.single_util import run_single
from tests.support import wait_for_async


def bodies(result: object) -> list[bytes]:
    return [m.stored.message.body for m in result.messages]  # type: ignore[attr-defined]


def test_popped_messages_are_invisible_until_acked_or_expired(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 2)
        await store.put_messages([Message("T", f"m{k}".encode(), queue_id=k % 2) for k in range(4)])
        first = await store.pop_messages("G", "T", max_count=3, invisible_ms=1000)
        assert first.status is PopStatus.FOUND and len(first.messages) == 3
        assert all(m.delivery_attempt == 1 and m.invisible_until == clock.now + 1000 for m in first.messages)
        rest = await store.pop_messages("G", "T", max_count=10, invisible_ms=1000)
        assert len(rest.messages) == 1
        seen = bodies(first) + bodies(rest)
        assert sorted(seen) == [b"m0", b"m1", b"m2", b"m3"]
        last = store._srv().status().last_index
        nothing = await store.pop_messages("G", "T", max_count=10, invisible_ms=1000)
        assert nothing.status is PopStatus.NO_NEW_MSG and store._srv().status().last_index == last  # no log write
        acks = await store.ack_messages("G", [m.receipt_handle for m in first.messages])
        assert [a.status for a in acks] == [AckStatus.OK] * 3
        assert (await store.ack_message("G", first.messages[0].receipt_handle)).status is AckStatus.INVALID_HANDLE
        clock.advance(999)
        assert (await store.pop_messages("G", "T", invisible_ms=1000)).status is PopStatus.NO_NEW_MSG
        clock.advance(1)
        again = await store.pop_messages("G", "T", invisible_ms=1000)
        assert bodies(again) == bodies(rest) and again.messages[0].delivery_attempt == 2
        # the handle of the first delivery is stale now; the new one works
        stale = await store.ack_message("G", rest.messages[0].receipt_handle)
        assert stale.status is AckStatus.INVALID_HANDLE
        assert (await store.ack_message("G", again.messages[0].receipt_handle)).status is AckStatus.OK
        # another group sees everything independently
        other = await store.pop_messages("G2", "T", max_count=10)
        assert sorted(bodies(other)) == [b"m0", b"m1", b"m2", b"m3"]
        assert (await store.ack_message("G", "garbage")).status is AckStatus.INVALID_HANDLE

    run_single(tmp_path, body)


def test_change_invisible_duration_extends_and_renews_the_handle(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_message(Message("T", b"slow"))
        got = await store.pop_messages("G", "T", invisible_ms=1000)
        handle = got.messages[0].receipt_handle
        changed = await store.change_invisible_duration("G", handle, 10_000)
        assert changed.status is AckStatus.OK and changed.receipt_handle != handle
        assert changed.invisible_until == clock.now + 10_000
        clock.advance(5000)
        assert (await store.pop_messages("G", "T")).status is PopStatus.NO_NEW_MSG
        assert (await store.ack_message("G", handle)).status is AckStatus.INVALID_HANDLE
        bad = await store.change_invisible_duration("G", handle, 1000)
        assert bad.status is AckStatus.INVALID_HANDLE
        clock.advance(5000)
        back = await store.pop_messages("G", "T")
        assert bodies(back) == [b"slow"] and back.messages[0].delivery_attempt == 2

    run_single(tmp_path, body, default_queue_count=1)


def test_dead_letter_after_max_attempts(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_messages([Message("T", b"poison", tags="p"), Message("T", b"fine")])
        for attempt in (1, 2):
            got = await store.pop_messages("G", "T", max_count=10, invisible_ms=100)
            assert [m.delivery_attempt for m in got.messages if m.stored.message.body == b"poison"] == [attempt]
            for m in got.messages:
                if m.stored.message.body == b"fine":
                    await store.ack_message("G", m.receipt_handle)
            clock.advance(100)
        assert (await store.pop_messages("G", "T", max_count=10)).status is PopStatus.NO_NEW_MSG
        dlq = store.topic("%DLQ%G")
        assert dlq is not None and store.max_offset("%DLQ%G", 0) == 1
        dead = await store.get_messages("G", "%DLQ%G", 0, 0)
        assert [m.message.body for m in dead.messages] == [b"poison"]
        assert dead.messages[0].topic == "%DLQ%G" and dead.messages[0].message.topic == "T"
        # the dead-letter topic can be popped like any other
        assert bodies(await store.pop_messages("ops", "%DLQ%G")) == [b"poison"]

    run_single(tmp_path, body, default_queue_count=1, max_delivery_attempts=2)


def test_fifo_delivers_each_message_group_in_order_one_at_a_time(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("F", 1, MessageType.FIFO)
        order = [("A", "a1"), ("B", "b1"), ("A", "a2"), ("B", "b2"), ("A", "a3")]
        for group, text in order:
            assert (await store.put_message(Message("F", text.encode(), message_group=group))).ok
        one = await store.pop_messages("G", "F", max_count=10, invisible_ms=1000)
        assert bodies(one) == [b"a1", b"b1"]
        assert (await store.pop_messages("G", "F", max_count=10)).status is PopStatus.NO_NEW_MSG
        handles = {m.stored.message.body: m.receipt_handle for m in one.messages}
        await store.ack_message("G", handles[b"a1"])
        two = await store.pop_messages("G", "F", max_count=10, invisible_ms=1000)
        assert bodies(two) == [b"a2"]  # b2 waits behind b1 (still in flight)
        clock.advance(1000)  # b1 and a2 expire: redelivered first, in queue order
        three = await store.pop_messages("G", "F", max_count=10, invisible_ms=1000)
        assert bodies(three) == [b"b1", b"a2"] and [m.delivery_attempt for m in three.messages] == [2, 2]
        await store.ack_messages("G", [m.receipt_handle for m in three.messages])
        four = await store.pop_messages("G", "F", max_count=10, invisible_ms=1000)
        assert bodies(four) == [b"b2", b"a3"]

    run_single(tmp_path, body)


def test_pop_starts_at_the_committed_offset_and_waits_for_delayed_messages(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 1)
        await store.put_messages([Message("T", f"m{k}".encode()) for k in range(4)])
        await store.commit_offset("G", "T", 0, 3)
        assert store.committed_offset("G", "T", 0) == 3 and store.committed_offset("H", "T", 0) == -1
        assert bodies(await store.pop_messages("G", "T", max_count=10)) == [b"m3"]
        await store.put_message(Message("T", b"later", delivery_timestamp=clock.now + 500))
        assert (await store.pop_messages("G", "T", max_count=10)).status is PopStatus.NO_NEW_MSG
        clock.advance(500)
        await wait_for_async(lambda: store.max_offset("T", 0) == 5, what="delayed message released")
        assert bodies(await store.pop_messages("G", "T", max_count=10)) == [b"later"]
        assert (await store.pop_messages("G", "nope")).status is PopStatus.TOPIC_NOT_FOUND
        assert (await store.pop_messages("G", "T", queue_id=3)).status is PopStatus.ILLEGAL

    run_single(tmp_path, body)


def test_empty_receives_on_a_blocked_fifo_queue_write_nothing_to_the_log(tmp_path: pathlib.Path) -> None:
    """An empty receive on a FIFO queue blocked behind an in-flight message appends no POP_RECEIVE entry:
    the master sees on its applied state that nothing could be delivered (else every poll grows the log)."""

    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("F", 1, MessageType.FIFO)
        for text in (b"a1", b"a2"):
            assert (await store.put_message(Message("F", text, message_group="A"))).ok
        assert bodies(await store.pop_messages("G", "F", max_count=10, invisible_ms=60_000)) == [b"a1"]
        before = int(store._srv().status().last_index)
        for _ in range(20):
            assert (
                await store.pop_messages("G", "F", max_count=10, invisible_ms=60_000)
            ).status is PopStatus.NO_NEW_MSG
        assert int(store._srv().status().last_index) == before
        assert (await store.put_message(Message("F", b"b1", message_group="B"))).ok
        assert bodies(await store.pop_messages("G", "F", max_count=10, invisible_ms=60_000)) == []  # b1 behind a2
        clock.advance(60_000)  # a1 expires: redelivered
        assert bodies(await store.pop_messages("G", "F", max_count=10, invisible_ms=60_000)) == [b"a1"]

    run_single(tmp_path, body)


def test_a_fifo_topic_does_not_grow_so_a_message_group_keeps_its_queue(tmp_path: pathlib.Path) -> None:
    """Growing a FIFO topic would remap a message group to another queue, and two of its messages could then
    be in flight at once, the newer one possibly first: a FIFO topic keeps its queue count."""

    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("F", 1, MessageType.FIFO)
        assert (await store.put_message(Message("F", b"a1", message_group="A"))).ok
        with pytest.raises(StoreError) as refused:
            await store.create_topic("F", 4, MessageType.FIFO)
        assert refused.value.status is PutStatus.MESSAGE_ILLEGAL
        assert (await store.create_topic("F", 1, MessageType.FIFO)).queue_count == 1  # (no growth: fine)
        assert (await store.put_message(Message("F", b"a2", message_group="A"))).queue_id == 0
        got = await store.pop_messages("G", "F", max_count=10, invisible_ms=60_000)
        assert bodies(got) == [b"a1"]
        await store.create_topic("N", 1)
        assert (await store.create_topic("N", 4)).queue_count == 4  # other topics still grow

    run_single(tmp_path, body)


def test_a_group_new_to_a_topic_starts_after_what_was_stored_before_its_first_receive(tmp_path: pathlib.Path) -> None:
    """`from_end`: the group's first receive marks where it starts, on every queue at once (RocketMQ 5's proxy
    starts a new group at the end of each queue); without it a new group starts at offset 0."""

    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 2)
        await store.put_messages([Message("T", b"old0", queue_id=0), Message("T", b"old1", queue_id=1)])
        last = store._srv().status().last_index
        first = await store.pop_messages("G", "T", max_count=10, from_end=True)
        assert first.status is PopStatus.NO_NEW_MSG
        assert store._srv().status().last_index == last + 1  # written anyway: it records the start
        idle = await store.pop_messages("G", "T", max_count=10, from_end=True)
        assert idle.status is PopStatus.NO_NEW_MSG and store._srv().status().last_index == last + 1  # no log write
        await store.put_messages([Message("T", b"new0", queue_id=0), Message("T", b"new1", queue_id=1)])
        got = await store.pop_messages("G", "T", max_count=10, from_end=True)
        assert sorted(bodies(got)) == [b"new0", b"new1"]
        everything = await store.pop_messages("G2", "T", max_count=10)  # the library default: from offset 0
        assert sorted(bodies(everything)) == [b"new0", b"new1", b"old0", b"old1"]
        # a group that has positions keeps them: committed offset 1 on queue 0, nothing on queue 1 (offset 0)
        await store.commit_offset("G3", "T", 0, 1)
        kept = await store.pop_messages("G3", "T", max_count=10, from_end=True)
        assert sorted(bodies(kept)) == [b"new0", b"new1", b"old1"]

    run_single(tmp_path, body)


def test_a_group_that_waits_for_a_topic_gets_its_first_messages(tmp_path: pathlib.Path) -> None:
    """A `from_end` receive on a topic that does not exist yet marks the group's start: everything the topic
    gets afterwards is delivered, including the messages that create it."""

    async def body(store: MessageStore, clock: FakeClock) -> None:
        waiting = await store.pop_messages("G", "U", max_count=10, from_end=True)
        assert waiting.status is PopStatus.TOPIC_NOT_FOUND
        last = store._srv().status().last_index
        again = await store.pop_messages("G", "U", max_count=10, from_end=True)
        assert again.status is PopStatus.TOPIC_NOT_FOUND and store._srv().status().last_index == last  # marked once
        await store.put_messages([Message("U", f"u{k}".encode()) for k in range(3)])
        got = await store.pop_messages("G", "U", max_count=10, from_end=True)
        assert sorted(bodies(got)) == [b"u0", b"u1", b"u2"]
        late = await store.pop_messages("G-late", "U", max_count=10, from_end=True)
        assert late.status is PopStatus.NO_NEW_MSG

    run_single(tmp_path, body)


def test_a_group_waiting_for_a_dead_letter_topic_gets_a_message_stored_before_its_first_receive(
    tmp_path: pathlib.Path,
) -> None:
    """A dead letter points at the bytes of a message stored before the reader's first receive; it is still
    enqueued after it, so the reader gets it (the start mark compares enqueue times, not log indexes)."""

    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_messages([Message("T", b"poison"), Message("T", b"old")])
        await store.pop_messages("R-old", "%DLQ%G", max_count=10, from_end=True)  # marks before any dead letter
        assert bodies(await store.pop_messages("G", "T", max_count=1, invisible_ms=100)) == [b"poison"]
        waiting = await store.pop_messages("R", "%DLQ%G", max_count=10, from_end=True)
        assert waiting.status is PopStatus.TOPIC_NOT_FOUND  # no dead letter yet: R's start mark is here
        clock.advance(100)
        again = await store.pop_messages("G", "T", max_count=1, invisible_ms=100)
        assert bodies(again) == [b"poison"] and again.messages[0].delivery_attempt == 2
        clock.advance(100)
        rest = await store.pop_messages("G", "T", max_count=10)  # poison: dead-lettered now
        assert bodies(rest) == [b"old"] and store.max_offset("%DLQ%G", 0) == 1
        for reader in ("R", "R-old"):
            assert bodies(await store.pop_messages(reader, "%DLQ%G", max_count=10, from_end=True)) == [b"poison"]
        late = await store.pop_messages("R-late", "%DLQ%G", max_count=10, from_end=True)
        assert late.status is PopStatus.NO_NEW_MSG  # a group that starts after the dead letter: not for it

    run_single(tmp_path, body, default_queue_count=1, max_delivery_attempts=2)


def test_pop_receive_commands_keep_their_layouts() -> None:
    """A receive without `from_end` is written in the layout that replicas without the flag read."""
    plain = c.PopReceive(1, 2, "G", "T", -1, 0, 32, 1000, 16, 5)
    marked = c.PopReceive(1, 2, "G", "T", -1, 0, 32, 1000, 16, 5, True)
    assert c.encode_command(plain)[3] == c.Tag.POP_RECEIVE_FROM
    assert c.encode_command(marked)[3] == c.Tag.POP_RECEIVE_END
    assert [c.decode_command(c.encode_command(x)) for x in (plain, marked)] == [plain, marked]
