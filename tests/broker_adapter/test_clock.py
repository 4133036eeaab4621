"""The master's clock jumping forward does not hold replicated time hostage: the leader
stamps a transient jump as its own elapsed time, accepts a lasting one, and apply moves `log_time` at most
`MAX_TIME_STEP` per command whatever the stamp."""

from __future__ import annotations

import pathlib

from dledger.broker_adapter import Message, MessageStore, PopStatus
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.apply import MAX_TIME_STEP
from dledger.storage_api import Entry
from tests.broker_adapter.group_util import FakeClock
from tests.broker_adapter.single_util import run_single

YEAR = 365 * 24 * 3_600_000


def test_a_transient_forward_jump_of_the_master_clock_does_not_stop_redelivery(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 1)
        clock.advance(YEAR)  # an NTP glitch for one request
        glitch = await store.put_message(Message("T", b"during-glitch"))
        assert glitch.ok and glitch.store_timestamp < clock.now - YEAR + 3_600_000
        clock.advance(-YEAR)  # corrected
        assert (await store.put_message(Message("T", b"after"))).ok
        got = await store.pop_messages("G", "T", max_count=10, invisible_ms=1000)
        assert got.status is PopStatus.FOUND and len(got.messages) == 2
        assert all(m.invisible_until <= clock.now + 3_600_000 for m in got.messages)
        clock.advance(60_000)  # a minute later both are redelivered (1 s invisibility)
        again = await store.pop_messages("G", "T", max_count=10, invisible_ms=1000)
        assert again.status is PopStatus.FOUND and len(again.messages) == 2

    run_single(tmp_path, body)


def test_a_lasting_clock_change_is_accepted_after_the_settle_time(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        await store.create_topic("T", 1)
        clock.advance(YEAR)
        first = await store.put_message(Message("T", b"a"))
        assert first.store_timestamp < clock.now - YEAR + 3_600_000  # held back once
        second = await store.put_message(Message("T", b"b"))  # still ahead after clock_jump_accept_s = 0: taken
        assert second.store_timestamp == first.store_timestamp + MAX_TIME_STEP  # (apply's bound per command)

    run_single(tmp_path, body, clock_jump_accept_s=0.0)


def test_apply_moves_log_time_at_most_one_step_per_command(tmp_path: pathlib.Path) -> None:
    store = MessageStore(tmp_path / "s")
    try:
        store.apply(Entry(1, 1, c.encode_command(c.Tick(0, 1_000))))
        assert store.applier.log_time == 1_000
        store.apply(Entry(2, 1, c.encode_command(c.Tick(0, 1_000 + YEAR))))
        assert store.applier.log_time == 1_000 + MAX_TIME_STEP
        store.apply(Entry(3, 1, c.encode_command(c.Tick(0, 2_000 + MAX_TIME_STEP))))
        assert store.applier.log_time == 2_000 + MAX_TIME_STEP
    finally:
        store.close()
