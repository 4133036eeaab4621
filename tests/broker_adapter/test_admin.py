"""Admin state through the store: topics, consumer groups, progress, recall; their commands and snapshot images."""

from __future__ import annotations

import pathlib
import struct
import zlib

import pytest

from dledger.broker_adapter import Message, MessageStore, MessageType, PopStatus, PutStatus, StoreError
from dledger.broker_adapter import commands as c
from dledger.broker_adapter import image as image_mod
from dledger.broker_adapter.admin_model import (
    PERM_READ,
    PERM_WRITE,
    GroupConfig,
    GroupStats,
    StartFrom,
    format_recall_handle,
    parse_recall_handle,
)
from dledger.broker_adapter.tables import U32
from tests.broker_adapter.group_util import FakeClock, dump
from tests.broker_adapter.single_util import run_single
from tests.broker_adapter.snapshot_util import image_of, restored
from tests.support import wait_for_async


def bodies(result: object) -> list[bytes]:
    return [m.stored.message.body for m in result.messages]  # type: ignore[attr-defined]


ADMIN_COMMANDS = [
    c.UpdateTopic(1, 2, "t", 4, int(MessageType.FIFO), 6),
    c.DeleteTopic(3, 4, "t"),
    c.UpdateGroup(5, 6, "g", 3, 10, 20, 2000, True, int(StartFrom.TIMESTAMP), 55),
    c.DeleteGroup(7, 8, "g"),
    c.Recall(9, 10, "t", "ID1", 99),
]


@pytest.mark.parametrize("cmd", ADMIN_COMMANDS)
def test_admin_commands_round_trip_and_refuse_truncation(cmd: c.Command) -> None:
    data = c.encode_command(cmd)
    assert c.decode_command(data) == cmd
    for cut in range(len(data)):
        with pytest.raises(c.CommandError):
            c.decode_command(data[:cut])


def test_group_config_and_recall_handle_codecs() -> None:
    cfg = GroupConfig("g", 2, 100, 1000, 1500, True, StartFrom.FIRST, 0)
    assert GroupConfig.unpack("g", cfg.pack()) == cfg
    assert cfg.backoff_ms(1) == 100 and cfg.backoff_ms(3) == 225 and cfg.backoff_ms(30) == 1000
    assert GroupConfig("g", max_attempts=0).check() is not None
    assert GroupConfig("g", backoff_initial_ms=5, backoff_max_ms=4).check() is not None
    handle = format_recall_handle("T", "ABC", 1234)
    assert parse_recall_handle(handle) == ("T", "ABC", 1234)
    for bad in ("", "!!!", "dGhpcyBpcyBub3Q", format_recall_handle("T", "ABC", 0), "x" * 5000):
        assert parse_recall_handle(bad) is None


def test_topics_create_update_describe_delete(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        cfg = await store.put_topic("Orders", create=True, queue_count=2, message_type=MessageType.FIFO)
        assert (cfg.queue_count, cfg.message_type, cfg.perm) == (2, MessageType.FIFO, PERM_READ | PERM_WRITE)
        with pytest.raises(StoreError, match="exists"):
            await store.put_topic("Orders", create=True)
        with pytest.raises(StoreError, match="keeps its 2 queues"):
            await store.put_topic("Orders", create=False, queue_count=4)
        with pytest.raises(StoreError) as missing:
            await store.put_topic("Nope", create=False, queue_count=4)
        assert missing.value.status is PutStatus.TOPIC_NOT_FOUND
        plain = await store.put_topic("Plain", create=True, queue_count=2)
        assert plain.message_type is MessageType.NORMAL
        grown = await store.put_topic("Plain", create=False, queue_count=6, message_type=MessageType.DELAY)
        assert (grown.queue_count, grown.message_type) == (6, MessageType.DELAY)
        with pytest.raises(StoreError, match="never shrinks"):
            await store.put_topic("Plain", create=False, queue_count=1)
        assert {t.name for t in store.topics()} == {"Orders", "Plain"}
        # permissions: not writable refuses puts, not readable refuses receives
        assert (await store.put_message(Message("Plain", b"a"))).ok
        await store.put_topic("Plain", create=False, perm=PERM_READ)
        refused = await store.put_message(Message("Plain", b"b"))
        assert refused.status is PutStatus.NO_PERMISSION and "not writable" in refused.reason
        assert bodies(await store.pop_messages("G", "Plain", max_count=10)) == [b"a"]
        await store.put_topic("Plain", create=False, perm=PERM_WRITE)
        assert (await store.put_message(Message("Plain", b"c"))).ok
        assert (await store.pop_messages("G", "Plain")).status is PopStatus.NO_PERMISSION
        # delete: settings, queues and positions go; a new topic of the name starts afresh
        await store.delete_topic("Plain")
        assert store.topic("Plain") is None and store.progress("G", "Plain") == []
        with pytest.raises(StoreError):
            await store.delete_topic("Plain")
        await store.put_topic("Plain", create=True, queue_count=1)
        assert store.max_offset("Plain", 0) == 0
        assert (await store.put_message(Message("Plain", b"new"))).ok
        assert bodies(await store.pop_messages("G", "Plain")) == [b"new"]

    run_single(tmp_path, body)


def test_a_topic_created_with_a_type_keeps_it_and_an_auto_created_one_takes_every_type(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        assert (await store.put_message(Message("Auto", b"n"))).ok
        assert (await store.put_message(Message("Auto", b"f", message_group="g"))).ok
        assert (await store.put_message(Message("Auto", b"d", delivery_timestamp=clock.now + 10))).ok
        auto = store.topic("Auto")
        assert auto is not None and auto.message_type is MessageType.MIXED

    run_single(tmp_path, body)


async def _fail_until_dead(store: MessageStore, clock: FakeClock, group: str, rounds: int) -> list[int]:
    """Receive the topic's one message `rounds` times without acknowledging it; the attempts seen."""
    seen = []
    for _ in range(rounds):
        got = await store.pop_messages(group, "F", max_count=10, invisible_ms=100)
        seen += [m.delivery_attempt for m in got.messages]
        clock.advance(100)
    return seen


def test_the_group_retry_policy_and_fifo_flag_drive_delivery(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_topic("F", create=True, queue_count=1, message_type=MessageType.FIFO)
        await store.put_group(GroupConfig("short", max_attempts=2, fifo=True, start=StartFrom.FIRST), create=True)
        await store.put_group(GroupConfig("long", max_attempts=5, fifo=True, start=StartFrom.FIRST), create=True)
        assert (await store.put_message(Message("F", b"poison", message_group="o1"))).ok
        assert (await store.put_message(Message("F", b"next", message_group="o1"))).ok
        short = await store.pop_messages("short", "F", max_count=10, invisible_ms=100)
        assert bodies(short) == [b"poison"]  # FIFO: "next" waits behind it
        clock.advance(100)
        assert await _fail_until_dead(store, clock, "short", 1) == [2]
        # after 2 attempts the message is dead-lettered and the next one of its message group flows
        after = await store.pop_messages("short", "F", max_count=10, invisible_ms=100_000)
        assert bodies(after) == [b"next"]
        assert store.max_offset("%DLQ%short", 0) == 1
        assert await _fail_until_dead(store, clock, "long", 4) == [1, 2, 3, 4]
        assert store.topic("%DLQ%long") is None  # still retrying
        stats = store.group_stats()
        assert stats["short", "F"] == GroupStats(delivered=2, redelivered=1, acked=0, dead_lettered=1)
        assert stats["long", "F"].redelivered == 3
        # a group with FIFO off gets both at once
        await store.put_group(GroupConfig("free", fifo=False, start=StartFrom.FIRST), create=True)
        assert bodies(await store.pop_messages("free", "F", max_count=10)) == [b"poison", b"next"]
        # update and delete
        changed = await store.put_group(GroupConfig("long", max_attempts=7), create=False)
        assert store.group_config("long") == changed and changed.max_attempts == 7
        await store.delete_group("long")
        assert store.group_config("long") is None and store.progress("long") == []
        with pytest.raises(StoreError) as gone:
            await store.delete_group("long")
        assert gone.value.status is PutStatus.NOT_FOUND
        assert [g.name for g in store.group_configs()] == ["free", "short"]

    run_single(tmp_path, body)


def test_where_a_configured_group_starts(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_topic("T", create=True, queue_count=1)
        assert (await store.put_message(Message("T", b"old"))).ok
        clock.advance(1000)
        middle = clock.now
        assert (await store.put_message(Message("T", b"mid"))).ok
        await store.put_group(GroupConfig("first", start=StartFrom.FIRST), create=True)
        await store.put_group(GroupConfig("last", start=StartFrom.LAST), create=True)
        await store.put_group(GroupConfig("at", start=StartFrom.TIMESTAMP, start_ms=middle), create=True)
        assert bodies(await store.pop_messages("first", "T", max_count=10)) == [b"old", b"mid"]
        assert (await store.pop_messages("last", "T", max_count=10)).status is PopStatus.NO_NEW_MSG
        assert bodies(await store.pop_messages("at", "T", max_count=10)) == [b"mid"]
        assert (await store.put_message(Message("T", b"new"))).ok
        assert bodies(await store.pop_messages("last", "T", max_count=10)) == [b"new"]

    run_single(tmp_path, body)


def test_consumer_progress_per_queue(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_topic("P", create=True, queue_count=2)
        for k in range(5):
            assert (await store.put_message(Message("P", b"m", queue_id=k % 2))).ok
        assert store.progress("G", "P")[0].consumer_offset == -1  # no position yet
        got = await store.pop_messages("G", "P", max_count=2, queue_id=0, invisible_ms=10_000)
        await store.ack_message("G", got.messages[0].receipt_handle)
        rows = {r.queue_id: r for r in store.progress("G")}
        assert (rows[0].broker_offset, rows[0].consumer_offset, rows[0].lag, rows[0].inflight) == (3, 2, 1, 1)
        assert rows[0].last_consume_ms == got.messages[1].stored.store_timestamp
        assert (rows[1].broker_offset, rows[1].consumer_offset, rows[1].lag) == (2, -1, 0)

    run_single(tmp_path, body)


def test_a_recalled_delayed_message_is_never_delivered(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_group(GroupConfig("G", start=StartFrom.FIRST), create=True)
        when = clock.now + 5_000
        put = await store.put_messages([Message("D", b"recalled", delivery_timestamp=when),
                                        Message("D", b"kept", delivery_timestamp=when)])  # fmt: skip
        assert put.ok
        handle = format_recall_handle("D", put.msg_ids[0], when)
        with pytest.raises(StoreError, match="of topic"):
            await store.recall("Other", handle)
        with pytest.raises(StoreError, match="malformed"):
            await store.recall("D", "garbage")
        assert await store.recall("D", handle) == put.msg_ids[0]
        with pytest.raises(StoreError) as twice:
            await store.recall("D", handle)
        assert twice.value.status is PutStatus.NOT_FOUND
        clock.advance(5_000)
        await wait_for_async(lambda: store.max_offset("D", put.queue_ids[1]) > 0, what="the kept message released")
        got = await store.pop_messages("G", "D", max_count=10)
        assert bodies(got) == [b"kept"]
        late = format_recall_handle("D", put.msg_ids[1], when)
        with pytest.raises(StoreError, match="not waiting"):
            await store.recall("D", late)  # delivered already
        assert await store.query_by_id(put.msg_ids[0]) is None

    run_single(tmp_path, body)


def _strip_tables(image: bytes, table_ids: set[int]) -> bytes:
    """The image without the records of `table_ids` (an image written before those tables existed)."""
    pos = image_mod.HEADER.size
    out = bytearray(image[:pos])
    count = 0
    while image[pos] != image_mod.END:
        tid, klen, vlen = image_mod.RECORD.unpack_from(image, pos)
        end = pos + image_mod.RECORD.size + klen + vlen
        if tid not in table_ids:
            out += image[pos:end]
            count += 1
        pos = end
    out += bytes([image_mod.END]) + struct.pack(">Q", count)
    return bytes(out + U32.pack(zlib.crc32(out)))


def test_admin_tables_are_in_the_image_and_old_images_still_load(tmp_path: pathlib.Path) -> None:
    state: dict[str, object] = {}

    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.put_topic("T", create=True, queue_count=2, perm=PERM_READ)
        await store.put_group(GroupConfig("G", max_attempts=3, start=StartFrom.FIRST), create=True)
        await store.put_topic("T", create=False, perm=PERM_READ | PERM_WRITE)
        assert (await store.put_message(Message("T", b"x"))).ok
        await store.put_topic("T", create=False, perm=PERM_READ)
        assert bodies(await store.pop_messages("G", "T")) == [b"x"]
        state["image"], state["index"] = image_of(store)
        state["dump"] = dump(store)

    run_single(tmp_path / "a", body)
    image, index = state["image"], state["index"]
    assert isinstance(image, bytes) and isinstance(index, int)
    copy = restored(tmp_path / "copy", image, index)
    assert dump(copy) == state["dump"]
    assert copy.group_config("G") == GroupConfig("G", max_attempts=3, start=StartFrom.FIRST)
    assert copy.tables.db["topicattr"] is not None and dump(copy)["topicattr"]
    copy.close()
    new_ids = {image_mod.TABLE_IDS[n] for n in ("topicattr", "groups", "gstats")}
    old = restored(tmp_path / "old", _strip_tables(image, new_ids), index)
    tables = dump(old)
    assert not tables["topicattr"] and not tables["groups"] and not tables["gstats"]
    assert tables["cq"] == state["dump"]["cq"]  # type: ignore[index]
    assert old.group_config("G") is None
    old.close()
    with pytest.raises(Exception, match=r"CRC|corrupt"):
        restored(tmp_path / "bad", image[:-1] + bytes([image[-1] ^ 1]), index)
