"""The official Python client (`rocketmq-python-client`) against a 3-replica `dledger broker` group.

Producer: normal (sync and async), FIFO, delay and transactional sends; SimpleConsumer: receive, ack,
change invisible duration, redelivery; PushConsumer: a listener. Each test uses its own topic and group.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from rocketmq import FilterExpression, PushConsumer, SimpleConsumer
from rocketmq.grpc_protocol import FilterType
from rocketmq.v5.consumer.push.message_listener import ConsumeResult, MessageListener

from dledger.cli.broker import LocalBrokerGroup
from tests.rocketmq_v5.test_nodejs import digest_bodies
from tests.rocketmq_v5.util import (
    OrphanChecker,
    config,
    drain,
    eventually,
    message,
    producer,
    receive,
    send_eventually,
    simple_consumer,
)

pytestmark = pytest.mark.process


def test_every_acknowledged_send_is_received_once_acked(group: LocalBrokerGroup) -> None:
    with producer(group, ("normal",)) as p:
        sent = {
            send_eventually(p, message("normal", f"sync {i}".encode(), tag="a", keys=f"k{i}")).message_id
            for i in range(10)
        }
        futures = [p.send_async(message("normal", f"async {i}".encode(), tag="a")) for i in range(40)]
        for f in futures:
            with contextlib.suppress(Exception):  # not acknowledged (a leader change): nothing is promised
                sent.add(f.result(timeout=30).message_id)
    assert len(sent) >= 40
    with simple_consumer(group, "g-normal", "normal") as c:
        got = drain(c, sent)
        assert set(got) == sent
        bodies = {m.body for m in got.values()}
        assert b"sync 3" in bodies and any(b.startswith(b"async") for b in bodies)
        sample = next(m for m in got.values() if m.body == b"sync 3")
        assert sample.tag == "a" and "k3" in sample.keys and sample.topic == "normal"
        # acked messages are never delivered again to this group
        assert receive(c, 32, 20) == []


def test_unacked_message_is_redelivered_after_invisible_duration(group: LocalBrokerGroup) -> None:
    with producer(group, ("redeliver",)) as p:
        mid = send_eventually(p, message("redeliver", b"x")).message_id
    with simple_consumer(group, "g-redeliver", "redeliver") as c:
        first = eventually("the first delivery", lambda: c.receive(1, 2))
        assert [m.message_id for m in first] == [mid] and first[0].delivery_attempt == 1
        # not acked: invisible for 2 s, then delivered again with the next attempt number
        again = eventually("the redelivery", lambda: c.receive(1, 2), timeout=30)
        assert again[0].message_id == mid and again[0].delivery_attempt == 2
        assert again[0].receipt_handle != first[0].receipt_handle
        c.change_invisible_duration(again[0], 1)  # a new handle, short invisibility
        third = eventually("the delivery after change_invisible_duration", lambda: c.receive(1, 30), timeout=30)
        assert third[0].message_id == mid and third[0].delivery_attempt == 3
        c.ack(third[0])
        assert receive(c, 1, 2) == []


def test_fifo_messages_of_a_group_arrive_in_order(group: LocalBrokerGroup) -> None:
    with producer(group, ("fifo",)) as p:
        for i in range(20):
            send_eventually(p, message("fifo", f"{i % 2}:{i}".encode(), message_group=f"order-{i % 2}"))
    seen: dict[str, list[int]] = {"0": [], "1": []}
    with simple_consumer(group, "g-fifo", "fifo") as c:
        deadline = time.monotonic() + 60
        while sum(map(len, seen.values())) < 20:
            assert time.monotonic() < deadline
            for m in c.receive(32, 20):
                key, n = m.body.decode().split(":")
                assert m.message_group == f"order-{key}"
                seen[key].append(int(n))
                c.ack(m)
    assert seen["0"] == list(range(0, 20, 2)) and seen["1"] == list(range(1, 20, 2))


def test_delay_message_is_not_delivered_before_its_time(group: LocalBrokerGroup) -> None:
    due = int(time.time()) + 3  # this client version sends delivery_timestamp as epoch *seconds*
    with producer(group, ("delay",)) as p:
        mid = send_eventually(p, message("delay", b"later", delivery_timestamp=due)).message_id
    with simple_consumer(group, "g-delay", "delay") as c:
        got = eventually("the delayed message", lambda: c.receive(1, 20), timeout=30)
        assert got[0].message_id == mid
        assert time.time() >= due - 0.05  # released by the master's clock, never early
        assert got[0].delivery_timestamp == due * 1000
        c.ack(got[0])


def test_transactions_commit_rollback_and_recovery_check(group: LocalBrokerGroup) -> None:
    checker = OrphanChecker()
    with producer(group, ("tx",), checker=checker) as p, simple_consumer(group, "g-tx", "tx") as c:
        committed = p.begin_transaction()
        c_id = p.send(message("tx", b"commit me"), committed).message_id
        rolled = p.begin_transaction()
        r_id = p.send(message("tx", b"roll me back"), rolled).message_id
        orphan = p.begin_transaction()
        o_id = p.send(message("tx", b"orphan"), orphan).message_id
        # half messages are invisible; only the orphan may already be resolved (by its check, after 1 s)
        early = receive(c, 8, 20)
        assert {m.message_id for m in early} <= {o_id}
        for m in early:
            c.ack(m)
        committed.commit()
        rolled.rollback()
        # the orphan is neither committed nor rolled back by its producer: the broker asks the checker
        got = set(drain(c, {c_id, o_id} - {m.message_id for m in early}, timeout=60))
        assert o_id in checker.checked
        assert r_id not in got
        assert receive(c, 8, 20) == []


def test_tag_filter_delivers_only_matching_tags(group: LocalBrokerGroup) -> None:
    with producer(group, ("tags",)) as p:
        want = {send_eventually(p, message("tags", b"yes", tag="A")).message_id for _ in range(3)}
        send_eventually(p, message("tags", b"no", tag="B"))
    with simple_consumer(group, "g-tags", "tags", tags="A || C") as c:
        got = drain(c, want)
        assert {m.tag for m in got.values()} == {"A"}
        assert receive(c, 8, 20) == []


def test_push_consumer_consumes_with_a_listener(group: LocalBrokerGroup) -> None:
    with producer(group, ("push",)) as p:
        sent = {send_eventually(p, message("push", f"p{i}".encode())).message_id for i in range(20)}
    consumed: set[str] = set()
    failed_once: set[str] = set()
    lock = threading.Lock()

    class Listener(MessageListener):
        def consume(self, msg: object) -> ConsumeResult:
            mid = msg.message_id  # type: ignore[attr-defined]
            with lock:
                if mid not in failed_once and len(failed_once) < 2:
                    failed_once.add(mid)  # a failure: redelivered after the server's backoff (1 s)
                    return ConsumeResult.FAILURE
                consumed.add(mid)
            return ConsumeResult.SUCCESS

    c = PushConsumer(config(group), "g-push", Listener(), {"push": FilterExpression("*")})
    c.startup()
    try:
        eventually("every message consumed", lambda: sent <= consumed, timeout=60, interval=0.1)
    finally:
        c.shutdown()
    assert failed_once and failed_once <= consumed


def test_no_received_message_is_flagged_corrupted(group: LocalBrokerGroup) -> None:
    """The client checks each body against the digest the broker sends (MD5, as RocketMQ's proxy sends it)."""
    bodies = [b.encode() for b in digest_bodies()]
    with producer(group, ("digest",)) as p:
        sent = {send_eventually(p, message("digest", body)).message_id: body for body in bodies}
    with simple_consumer(group, "g-digest", "digest") as c:
        got = drain(c, set(sent))
    assert {mid: m.body for mid, m in got.items()} == sent
    assert [mid for mid, m in got.items() if m.corrupted] == []


def test_sql92_subscription_receives_exactly_the_matching_messages(group: LocalBrokerGroup) -> None:
    expression = "(price > 10 AND region IN ('eu', 'us')) OR TAGS = 'vip' OR rank BETWEEN 1 AND 2"
    cases = [
        ({"price": "20", "region": "eu"}, "", True),
        ({"price": "20", "region": "asia"}, "", False),
        ({"price": "5", "region": "us"}, "", False),
        ({"price": "cheap", "region": "us"}, "", False),  # does not convert to a number: no match
        ({"region": "eu"}, "vip", True),
        ({}, "", False),  # every property absent: unknown, not delivered
        ({"rank": "2"}, "other", True),
        ({"rank": "3"}, "", False),
    ]
    want: set[str] = set()
    sent: set[str] = set()
    with producer(group, ("sql",)) as p:
        for k, (props, tag, matches) in enumerate(cases):
            msg = message("sql", f"case {k}".encode(), **({"tag": tag} if tag else {}))
            for key, value in props.items():
                msg.add_property(key, value)
            mid = send_eventually(p, msg).message_id
            sent.add(mid)
            if matches:
                want.add(mid)
    c = SimpleConsumer(config(group), "g-sql", {"sql": FilterExpression(expression, FilterType.SQL)}, await_duration=1)
    c.startup()
    try:
        got = drain(c, want)
        assert set(got) == want
        assert receive(c, 32, 20) == []  # the others were filtered out for this group, not left behind
    finally:
        c.shutdown()
    with simple_consumer(group, "g-sql-all", "sql") as everything:  # another group still sees every message
        assert set(drain(everything, sent)) == sent
