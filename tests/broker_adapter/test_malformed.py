"""Malformed input never fences a replica: every input that can crash a naive `Applier.apply` is
skipped deterministically, on every replica alike; the leader refuses what apply would skip with a clear status;
and an unexpected exception while applying a command skips that command whole (no partial effect)."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any
from unittest import mock

import pytest

from dledger.broker_adapter import AckStatus, Message, MessageStore, PopStatus, PutStatus, StoreOptions, prepare
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.apply import Applier
from dledger.broker_adapter.prepare import Preparer
from dledger.broker_adapter.results import StoreError
from dledger.storage_api import Entry
from tests.broker_adapter.group_util import BrokerGroup, dump, run_group

NOW = 1_700_000_000_000


def put_entry(msgs: list[Message], now: int = NOW) -> bytes:
    """A PUT as a leader without its size limits would make it (what a faulty or hostile leader could append)."""
    with mock.patch.object(prepare, "_check_limits", lambda *args: None):
        _, put, _ = Preparer(StoreOptions(), lambda name: None).prepare(msgs, now)
    return c.encode_put(0, now, put.topics, put.metas, put.blobs)


# entries that, unchecked, crash apply with IndexError / BadValsizeError / struct.error
POISON: dict[str, list[bytes]] = {
    "magic only": [c.MAGIC],
    "3 bytes": [c.MAGIC + b"\x01"],
    "put msg_id 600": [put_entry([Message("T", b"x", msg_id="i" * 600)])],
    "put key 600": [put_entry([Message("T", b"x", keys=("k" * 600,))])],
    "txn msg_id 600": [put_entry([Message("T", b"x", msg_id="i" * 600, transaction=True)])],
    "end txn empty id": [c.encode_command(c.EndTransaction(0, NOW, "", True))],
    "end txn id 600": [c.encode_command(c.EndTransaction(0, NOW, "m" * 600, True))],
    "ack topic 600": [c.encode_command(c.Ack(0, NOW, "G", ("t" * 600 + ":0:0:0",)))],
    "ack offset 2**64": [c.encode_command(c.Ack(0, NOW, "G", (f"T:0:{2**64}:0",)))],
    "change invisible offset 2**64": [c.encode_command(c.ChangeInvisible(0, NOW, "G", f"T:0:{2**64}:0", 1))],
    "pop invisible 2**63-1": [
        put_entry([Message("T", b"x", queue_id=0)]),
        c.encode_command(c.PopReceive(0, NOW, "G", "T", 0, 0, 1, 2**63 - 1, 3)),
    ],
    "tick now 2**63-1 then pop": [
        put_entry([Message("T", b"x", queue_id=0)]),
        c.encode_command(c.Tick(0, 2**63 - 1)),
        c.encode_command(c.PopReceive(0, 2**63 - 1, "G", "T", 0, 0, 1, 30_000, 3)),
    ],
    "create topic 600": [c.encode_command(c.CreateTopic(0, NOW, "t" * 600, 1, 0))],
    "create topic with NUL": [c.encode_command(c.CreateTopic(0, NOW, "a\0b", 1, 0))],
    "commit offset long names": [c.encode_command(c.CommitOffset(0, NOW, "g" * 300, "t" * 300, 0, 1))],
    "commit offset empty group": [c.encode_command(c.CommitOffset(0, NOW, "", "T", 0, 1))],
    "pop empty topic": [c.encode_command(c.PopReceive(0, NOW, "G", "", 0, 0, 1, 1, 3))],
    "pop group 600": [c.encode_command(c.PopReceive(0, NOW, "g" * 600, "T", 0, 0, 1, 1, 3))],
}


def _log(datas: list[bytes]) -> list[Entry]:
    head = [c.encode_command(c.CreateTopic(0, NOW, "T", 2, 0))]
    tail = [put_entry([Message("T", b"after", queue_id=1)], NOW + 1)]  # the store keeps applying afterwards
    return [Entry(i + 1, 1, d) for i, d in enumerate(head + datas + tail)]


@pytest.mark.parametrize("name", list(POISON))
def test_poison_inputs_are_skipped_identically_and_apply_goes_on(tmp_path: pathlib.Path, name: str) -> None:
    log = _log(POISON[name])
    one, two = MessageStore(tmp_path / "one"), MessageStore(tmp_path / "two")
    try:
        for entry in log:
            one.apply(entry)
        for entry in log[:2]:
            two.apply(entry)
        two.close()
        two = MessageStore(tmp_path / "two")  # a restart replays the rest, the poison entry included
        for entry in log[2:]:
            two.apply(entry)
        assert one.last_applied() == two.last_applied() == len(log)
        assert dump(one) == dump(two)
        assert one.applier.failed is None
        with one.tables.env.begin() as txn:  # the entry after the poison applied: queue 1 got its message
            assert txn.get(b"T\0" + (1).to_bytes(4, "big") + (0).to_bytes(8, "big"), db=one.tables.db["cq"])
    finally:
        one.close()
        two.close()


def test_an_unexpected_exception_skips_the_command_whole_and_later_entries_apply(tmp_path: pathlib.Path) -> None:
    """The safety net: a bug in a command handler (not a storage error) skips that command with none of its
    writes, in the same batch as healthy entries (applied under one event-loop transaction)."""

    def broken(self: Applier, txn: Any, cmd: c.EndTransaction) -> bool:
        txn.put(b"partial", b"x", db=self.db["meta"])
        raise ValueError("a bug")

    store = MessageStore(tmp_path / "s")
    store.applier._end_transaction = broken.__get__(store.applier)  # type: ignore[method-assign]
    log = _log([c.encode_command(c.EndTransaction(0, NOW, "id", True))])

    async def main() -> None:  # inside a loop: the entries share one transaction, committed by call_soon
        for entry in log:
            store.apply(entry)
        assert store.last_applied() == 0  # not committed yet
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
        assert store.last_applied() == len(log)
        assert store.applier.failed is None and store.applier.skipped == 1
        with store.tables.env.begin() as txn:
            assert txn.get(b"partial", db=store.tables.db["meta"]) is None
            assert txn.get(b"T\0" + (1).to_bytes(4, "big") + (0).to_bytes(8, "big"), db=store.tables.db["cq"])
    finally:
        store.close()


def test_public_calls_and_raw_appends_leave_every_replica_healthy_and_identical(tmp_path: pathlib.Path) -> None:
    """Public calls and raw appends of entries apply would refuse: a replica that fenced itself on one would
    fence all three at the same index, so every replica must skip them alike and stay healthy."""

    async def body(group: BrokerGroup) -> None:
        m = await group.wait_for_master(20)
        assert (await m.put_message(Message("T", b"ok"))).ok
        illegal = [
            await m.put_message(Message("T", b"x", msg_id="i" * 600)),
            await m.put_message(Message("T", b"x", keys=("k" * 600,))),
        ]
        assert [r.status for r in illegal] == [PutStatus.MESSAGE_ILLEGAL] * 2
        assert (await m.ack_message("G", f"T:0:{2**64}:1")).status is AckStatus.INVALID_HANDLE
        assert (await m.pop_messages("G", "T", invisible_ms=2**63 - 1)).status is PopStatus.ILLEGAL
        bad = await m.change_invisible_duration("G", "T:0:0:1", 2**63 - 1)
        assert bad.status is AckStatus.INVALID_HANDLE
        with pytest.raises(StoreError) as refused:
            await m.end_transaction("", True)
        assert refused.value.status is PutStatus.MESSAGE_ILLEGAL
        raw = [c.MAGIC, c.MAGIC + b"\x01", *POISON["create topic 600"], *POISON["tick now 2**63-1 then pop"]]
        last, _ = await m._srv().append(raw)
        last += len(raw) - 1
        assert (await m.put_message(Message("T", b"after"))).ok
        await group.wait_applied(last + 1)
        for node_id, store in group.stores.items():
            assert store._srv().node.role != "fenced", node_id
        dumps = [dump(s) for s in group.stores.values()]
        assert all(d == dumps[0] for d in dumps)

    run_group(tmp_path, body)
