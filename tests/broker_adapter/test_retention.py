"""Retention on tiny segments: old segments go only once every replica has applied them, reads then report
the removed range, and a full disk refuses writes."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from dledger.broker_adapter import GetStatus, Message, PopStatus, StoreOptions
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.tables import Inflight
from tests.broker_adapter.group_util import BrokerGroup, FakeClock, dump, run_group

# tiny segments, and a group whose leader stays put on a loaded machine (these tests are not about elections:
# a leader change mid-test would fail a write they expect to succeed)
STEADY = {"segment_bytes": 4096, "election_timeout_ms": 1000, "heartbeat_ms": 100}


def _quiet_disk(_: pathlib.Path) -> float:
    """A disk far below every ratio: these tests must not depend on how full the test machine's disk is
    (a nearly full one made retention compact past pins, as it should)."""
    return 0.1


def test_old_segments_are_compacted_once_every_replica_has_them(tmp_path: pathlib.Path) -> None:
    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 1)
        ids = []
        for k in range(40):
            r = await master.put_message(Message("T", bytes([k]) * 400, keys=(f"k{k}",)))
            ids.append(r.msg_id)
        follower = next(i for i, s in group.stores.items() if s is not master)
        await group.stop(follower)
        held = await master.run_retention()
        assert held.dropped_before == 0 and "did not answer" in held.reason
        assert held.first_index == 1
        await group.start(follower)
        await group.wait_applied(master.last_applied())
        for store in group.stores.values():
            report = await store.run_retention()
            assert report.dropped_before > 1 and report.first_index == store._srv().status().first_index
            assert report.first_index > 1
            low = store.min_offset("T", 0)
            assert 0 < low < 40 and store.max_offset("T", 0) == 40
            gone = await store.get_messages("G", "T", 0, 0)
            assert gone.status is GetStatus.OFFSET_TOO_SMALL and gone.next_offset == low
            kept = await store.get_messages("G", "T", 0, low, max_count=100)
            assert [m.queue_offset for m in kept.messages] == list(range(low, 40))
            assert kept.messages[0].message.body == bytes([low]) * 400
            assert await store.query_by_id(ids[0]) is None
            assert await store.query_by_key("T", "k0") == []
            assert (await store.query_by_id(ids[39])) is not None
        # writing goes on after compaction
        assert (await master.put_message(Message("T", b"after"))).queue_offset == 40

    opts = StoreOptions(disk_usage=_quiet_disk, retention_interval_s=0, file_reserved_hours=1e-9)
    run_group(tmp_path, body, opts, **STEADY)


def test_disk_ratio_compacts_young_segments_one_per_pass(tmp_path: pathlib.Path) -> None:
    ratio = [0.5]

    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        for k in range(30):
            await master.put_message(Message("T", bytes([k]) * 400, queue_id=0))
        await group.wait_applied(master.last_applied())
        young = await master.run_retention()
        assert young.dropped_before == 0  # nothing is old and the disk is fine
        ratio[0] = 0.8  # over diskMaxUsedSpaceRatio (75%)
        first = await master.run_retention()
        second = await master.run_retention()
        segments = master._srv().segments()
        assert 1 < first.first_index < second.first_index == segments[0].first_index
        assert first.disk_ratio == 0.8

    opts = StoreOptions(retention_interval_s=0, disk_usage=lambda _: ratio[0], default_queue_count=1)
    run_group(tmp_path, body, opts, **STEADY)


async def _lose_tables_after_retention(group: BrokerGroup, tmp_path: pathlib.Path, *, snapshots: bool) -> str:
    """30 messages, retention on a follower, then the follower stops and loses its tables (and its
    snapshots when `snapshots`); returns the follower's id."""
    master = await group.wait_for_master()
    for k in range(30):
        await master.put_message(Message("T", bytes([k]) * 400, queue_id=0))
    await group.wait_applied(master.last_applied())
    follower = next(i for i, s in group.stores.items() if s is not master)
    report = await group.stores[follower].run_retention()
    assert report.first_index > 1
    await group.stop(follower)
    shutil.rmtree(tmp_path / follower / "broker")
    if snapshots:
        shutil.rmtree(tmp_path / follower / "snapshots")
    return follower


RETENTION_OPTIONS = StoreOptions(
    disk_usage=_quiet_disk, retention_interval_s=0, file_reserved_hours=1e-9, default_queue_count=1
)


def test_tables_lost_after_compaction_come_back_from_the_snapshot(tmp_path: pathlib.Path) -> None:
    """Retention takes a snapshot before it compacts; a replica whose tables were lost restores them from it
    at start, and then holds the same tables as the master."""

    async def body(group: BrokerGroup) -> None:
        follower = await _lose_tables_after_retention(group, tmp_path, snapshots=False)
        master = await group.wait_for_master()
        store = await group.start(follower)
        assert store.max_offset("T", 0) == master.max_offset("T", 0) == 30
        await master.put_message(Message("T", b"after", queue_id=0))
        await group.wait_applied(master.last_applied())
        assert store.max_offset("T", 0) == 31
        assert dump(store) == dump(master)

    run_group(tmp_path, body, RETENTION_OPTIONS, **STEADY)


def test_tables_and_snapshots_lost_after_compaction_are_refused_not_half_rebuilt(tmp_path: pathlib.Path) -> None:
    async def body(group: BrokerGroup) -> None:
        follower = await _lose_tables_after_retention(group, tmp_path, snapshots=True)
        with pytest.raises(RuntimeError, match="no snapshot covers the gap"):
            await group.start(follower)

    run_group(tmp_path, body, RETENTION_OPTIONS, **STEADY)


def test_pending_prepared_and_in_flight_messages_pin_their_log_entries(tmp_path: pathlib.Path) -> None:
    """Retention must not drop the entries of a delayed message not yet released, a prepared message not
    yet committed or a popped message not yet acknowledged: they (and everything after them) stay until
    released, ended or acknowledged."""
    clock = FakeClock()

    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 1)
        await master.create_topic("P", 1)
        assert (await master.put_message(Message("P", b"POPPED"))).ok
        popped = await master.pop_messages("G", "P", invisible_ms=3_600_000)
        assert popped.status is PopStatus.FOUND
        delayed = await master.put_message(Message("T", b"DELAYED", delivery_timestamp=clock.now + 3_600_000))
        prepared = await master.put_message(Message("T", b"PREPARED", transaction=True))
        for k in range(40):
            assert (await master.put_message(Message("T", bytes([65 + k % 26]) * 400))).ok
        await group.wait_applied(master.last_applied())
        pinned = (await master.run_retention()).first_index
        first_put = popped.messages[0].stored.log_index
        assert pinned <= first_put  # the popped message's entry (the oldest pin) is kept
        assert await master.ack_message("G", popped.messages[0].receipt_handle)
        assert (await master.run_retention()).first_index <= delayed.log_index
        assert await master.end_transaction(prepared.msg_id, True)
        clock.advance(3_600_000)
        await group.wait_for(lambda: master.max_offset("T", 0) == 42, what="the delayed message released")
        for msg_id, body in ((delayed.msg_id, b"DELAYED"), (prepared.msg_id, b"PREPARED")):
            found = await master.query_by_id(msg_id)
            assert found is not None and found.message.body == body
        await group.wait_applied(master.last_applied())
        assert master.tables.first_pinned() is None
        released = await master.run_retention()
        assert released.first_index > prepared.log_index  # nothing pins the old entries any more

    opts = StoreOptions(
        disk_usage=_quiet_disk, clock=clock, retention_interval_s=0, timer_interval_s=0.005, file_reserved_hours=1e-9
    )
    run_group(tmp_path, body, opts, **STEADY)


def test_min_offset_after_compaction_keeps_a_live_message_before_a_released_delayed_one(tmp_path: pathlib.Path) -> None:
    """A released delayed message gets a queue offset after messages of later log entries;
    once its entry is compacted, min_offset must still start at the older offsets whose bodies are live."""
    clock = FakeClock()

    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 2)
        delayed = await master.put_message(Message("T", b"D", queue_id=0, delivery_timestamp=clock.now + 1000))
        for k in range(40):  # filler on queue 1 rolls segments
            assert (await master.put_message(Message("T", bytes([65 + k % 26]) * 400, queue_id=1))).ok
        live = await master.put_message(Message("T", b"A-live", queue_id=0))
        clock.advance(1000)
        await group.wait_for(lambda: master.max_offset("T", 0) == 2, what="the delayed message released")
        later = await master.put_message(Message("T", b"B-live", queue_id=0))
        assert (live.queue_offset, later.queue_offset) == (0, 2)
        await group.wait_applied(master.last_applied())
        report = await master.run_retention()
        assert delayed.log_index < report.first_index <= live.log_index  # D's body is gone, A's is not
        assert master.min_offset("T", 0) == 0
        got = await master.get_messages("G", "T", 0, 0, max_count=10)
        assert got.status is GetStatus.FOUND
        assert [m.message.body for m in got.messages] == [b"A-live", b"B-live"]
        low = master.min_offset("T", 1)  # the filler's compacted head is still reported
        assert low > 0 and (await master.get_messages("G", "T", 1, low - 1)).status is GetStatus.OFFSET_TOO_SMALL
        head = await master.get_messages("G", "T", 1, low, max_count=1)
        assert head.status is GetStatus.FOUND and head.messages[0].log_index >= report.first_index

    opts = StoreOptions(
        disk_usage=_quiet_disk, clock=clock, retention_interval_s=0, timer_interval_s=0.005, file_reserved_hours=1e-9
    )
    run_group(tmp_path, body, opts, **STEADY)


def test_a_new_pop_group_over_a_compacted_head_gets_live_messages_and_no_phantoms(tmp_path: pathlib.Path) -> None:
    """A new group's receives must not record compacted offsets as in flight (and answer NO_NEW_MSG while
    live messages wait)."""

    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("T", 1)
        for k in range(40):
            assert (await master.put_message(Message("T", bytes([65 + k % 26]) * 400))).ok
        await group.wait_applied(master.last_applied())
        report = await master.run_retention()
        low = master.min_offset("T", 0)
        assert report.first_index > 1 and low > 0
        got = await master.pop_messages("NEW", "T", max_count=4, invisible_ms=60_000)
        assert got.status is PopStatus.FOUND
        assert [m.stored.queue_offset for m in got.messages] == list(range(low, low + 4))
        await group.wait_applied(master.last_applied())
        for store in group.stores.values():
            inflight = dump(store)["inflight"]
            assert len(inflight) == 4  # the passed-over offsets are not in flight
            assert all(Inflight.unpack(raw).index >= report.first_index for _, raw in inflight)

    opts = StoreOptions(disk_usage=_quiet_disk, retention_interval_s=0, file_reserved_hours=1e-9)
    run_group(tmp_path, body, opts, **STEADY)


def test_pop_receive_written_before_first_index_existed_still_decodes() -> None:
    new = c.encode_command(c.PopReceive(1, 2, "G", "T", -1, 0, 3, 4, 5, 77))
    old = new[:3] + bytes([c.Tag.POP_RECEIVE]) + new[4:-8]
    assert c.decode_command(old) == c.PopReceive(1, 2, "G", "T", -1, 0, 3, 4, 5, 0)


def test_pins_do_not_hold_against_disk_pressure(tmp_path: pathlib.Path) -> None:
    """An abandoned Pop group's in-flight message pins the log against age, not against a full disk."""
    ratio = [0.5]

    async def body(group: BrokerGroup) -> None:
        master = await group.wait_for_master()
        await master.create_topic("P", 1)
        assert (await master.put_message(Message("P", b"POPPED"))).ok
        popped = await master.pop_messages("abandoned", "P", invisible_ms=60_000)
        pinned = popped.messages[0].stored.log_index
        for k in range(30):
            assert (await master.put_message(Message("T", bytes([k]) * 400, queue_id=0))).ok
        await group.wait_applied(master.last_applied())
        held = await master.run_retention()
        assert held.first_index <= pinned and "pinned" in held.reason
        ratio[0] = 0.8  # over diskMaxUsedSpaceRatio: one young segment per pass, pins or not
        while (report := await master.run_retention()).first_index <= pinned:
            assert report.dropped_before > 0  # each pass makes progress
        assert master.tables.first_pinned() == pinned  # the record stays; only its body is gone

    opts = StoreOptions(retention_interval_s=0, disk_usage=lambda _: ratio[0], default_queue_count=1)
    run_group(tmp_path, body, opts, **STEADY)
