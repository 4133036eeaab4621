"""Property: applying a random command log in one pass, or in two passes with a restart (tables closed and
reopened) in between, or on another replica, gives byte-identical tables; queue offsets stay dense."""

from __future__ import annotations

import asyncio
import pathlib
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.broker_adapter import Message, MessageStore, StoreOptions
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.pop import format_handle
from dledger.broker_adapter.prepare import Preparer
from dledger.storage_api import Entry
from tests.broker_adapter.group_util import dump

TOPICS = ("A", "B")

put_op = st.tuples(
    st.just("put"),
    st.sampled_from(TOPICS),
    st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from(["", "x", "y"]), st.integers(0, 300)), min_size=1, max_size=4
    ),
)
pop_op = st.tuples(st.just("pop"), st.sampled_from(TOPICS), st.integers(1, 5), st.integers(0, 200))
ack_op = st.tuples(st.just("ack"), st.sampled_from(TOPICS), st.integers(0, 1), st.integers(0, 10), st.integers(0, 60))
misc_op = st.tuples(st.sampled_from(["tick", "offset"]), st.sampled_from(TOPICS), st.integers(0, 1))
# topics and groups changed or deleted, delayed messages recalled (k picks the variant and its values)
admin_op = st.tuples(
    st.sampled_from(["topic", "untopic", "group", "ungroup", "recall"]), st.sampled_from(TOPICS), st.integers(0, 11)
)
ops = st.lists(st.one_of(put_op, pop_op, ack_op, misc_op, admin_op), max_size=25)


def build_log(program: list[tuple[object, ...]]) -> list[Entry]:
    prep = Preparer(StoreOptions(default_queue_count=2), lambda name: None)
    now = 1_000
    data: list[bytes] = []
    delayed: list[tuple[str, str, int]] = []  # (topic, id, delivery) of each delayed message put
    for topic in TOPICS:
        data.append(c.encode_command(c.CreateTopic(0, now, topic, 2, 0)))
    for op in program:
        now += 50
        kind = op[0]
        if kind == "put":
            msgs = [
                Message(str(op[1]), b"m", queue_id=q, tags=t, delivery_timestamp=now + d if d > 200 else 0)
                for q, t, d in op[2]  # type: ignore[attr-defined]
            ]
            _, put, ids = prep.prepare(msgs, now)
            data.append(c.encode_put(0, now, put.topics, put.metas, put.blobs))
            delayed += [
                (m.topic, i, m.delivery_timestamp) for m, i in zip(msgs, ids, strict=True) if m.delivery_timestamp
            ]
        elif kind == "pop":
            data.append(c.encode_command(c.PopReceive(0, now, "G", str(op[1]), -1, 0, int(op[2]), int(op[3]), 2)))  # type: ignore[call-overload]
        elif kind == "ack":
            # handles guessed from (queue, offset, seq): most are stale or unknown, some hit
            handle = format_handle(str(op[1]), int(op[2]), int(op[3]), len(data) - int(op[4]) % (len(data) or 1))  # type: ignore[call-overload]
            data.append(c.encode_command(c.Ack(0, now, "G", (handle,))))
        elif kind in ("topic", "untopic", "group", "ungroup", "recall"):
            data.append(c.encode_command(_admin(str(kind), str(op[1]), int(op[2]), now, delayed)))  # type: ignore[call-overload]
        elif kind == "tick":
            data.append(c.encode_command(c.Tick(0, now)))
        else:
            data.append(c.encode_command(c.CommitOffset(0, now, "G", str(op[1]), int(op[2]), 1)))  # type: ignore[call-overload]
    return [Entry(i + 1, 1, d) for i, d in enumerate(data)]


def _admin(kind: str, topic: str, k: int, now: int, delayed: list[tuple[str, str, int]]) -> c.Command:
    if kind == "topic":  # queue count 2 or 3, type NORMAL / FIFO / MIXED, read-write or read-only
        return c.UpdateTopic(0, now, topic, 2 + k % 2, (0, 1, 4)[k % 3], 6 if k < 8 else 4)
    if kind == "untopic":
        return c.DeleteTopic(0, now, topic)
    if kind == "group":  # FIFO on or off, 1..3 attempts, starting first / last / at a time
        return c.UpdateGroup(0, now, "G", 1 + k % 3, 0, 10, 1000, k % 2 == 0, k % 3, now - 100 * (k % 4))
    if kind == "ungroup":
        return c.DeleteGroup(0, now, "G")
    if not delayed:
        return c.Recall(0, now, topic, "NO-SUCH-ID", now)
    target, msg_id, delivery = delayed[k % len(delayed)]
    return c.Recall(0, now, target, msg_id, delivery)


@settings(max_examples=25, deadline=None)
@given(ops, st.data())
def test_restart_and_replicas_give_identical_tables(program: list[tuple[object, ...]], data: st.DataObject) -> None:
    log = build_log(program)
    cut = data.draw(st.integers(0, len(log)))
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        one = MessageStore(root / "one")
        for entry in log:
            one.apply(entry)
        two = MessageStore(root / "two")
        for entry in log[:cut]:
            two.apply(entry)
        two.close()
        two = MessageStore(root / "two")  # a restart: caches come back from LMDB
        assert two.last_applied() == cut
        for entry in log[two.last_applied() :]:
            two.apply(entry)
        tables = dump(one)
        assert tables == dump(two)
        for key, raw in tables["cqmax"]:
            prefix = key
            offsets = [k[len(prefix) :] for k, _ in tables["cq"] if k.startswith(prefix)]
            assert [int.from_bytes(o, "big") for o in offsets] == list(range(int.from_bytes(raw, "big")))
        one.close()
        two.close()


@settings(max_examples=15, deadline=None)
@given(ops, st.data())
def test_batched_apply_on_an_event_loop_equals_one_entry_at_a_time(
    program: list[tuple[object, ...]], data: st.DataObject
) -> None:
    """The node applies bursts of entries on its event loop: one LMDB transaction per burst, committed by a
    `call_soon` flush (the path the per-entry tests above never take). Any split into bursts gives the same
    tables as applying one entry at a time."""
    log = build_log(program)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(log)), max_size=4)))
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        one = MessageStore(root / "one")
        for entry in log:
            one.apply(entry)
        two = MessageStore(root / "two")

        async def main() -> None:
            start = 0
            for end in [*cuts, len(log)]:
                for entry in log[start:end]:
                    two.apply(entry)
                assert two.last_applied() <= start  # nothing of the burst is committed before its flush
                await asyncio.sleep(0)  # the burst's flush runs
                assert two.applier._txn is None
                start = end

        asyncio.run(main())
        assert dump(one) == dump(two)
        assert two.last_applied() == one.last_applied()
        one.close()
        two.close()
