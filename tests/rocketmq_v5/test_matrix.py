"""The RocketMQ 5 scenarios through one replica at a time, the leader's endpoint or a follower's, with the
official Python client and the official Node.js client (its scripts: tests/rocketmq_v5/node/).

The group's endpoints are host names, so a route names only the replica that answered it and a client stays
on the endpoint it was given: through a follower, every send, receive, ack, invisible-time change, transaction
end, dead-letter forward and recall is forwarded to the leader, and a transaction check comes from the follower.
Each scenario runs once per endpoint (`via`), on its own topic and consumer group. The group is this module's
own with the default settings (a new consumer group starts at the end of each queue: each scenario's consumer
makes its first receive before the sends it expects) except `maxReconsumeTimes` 2 and a 1 s transaction check.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from rocketmq import FilterExpression, PushConsumer, SimpleConsumer
from rocketmq.grpc_protocol import FilterType
from rocketmq.v5.consumer.push.message_listener import ConsumeResult, MessageListener

from dledger.cli.broker import LocalBrokerGroup
from dledger.cli.main import main as cli_main
from tests.rocketmq_v5.test_nodejs import NODE_DIR, node_or_skip
from tests.rocketmq_v5.util import (
    OrphanChecker,
    Pinned,
    config,
    drain,
    eventually,
    leader_id,
    message,
    producer,
    receive,
    running_group,
    send_eventually,
)

pytestmark = pytest.mark.process

MAX_BODY = 4 << 20  # maxMessageSize's default


@pytest.fixture(scope="module")
def by_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokerGroup]:
    extra = {"maxReconsumeTimes": "2", "transactionTimeOut": "1000", "transactionCheckInterval": "1000"}
    yield from running_group(tmp_path_factory.mktemp("matrix"), extra, by_name=True)


@pytest.fixture(params=["leader", "follower"])
def via(request: pytest.FixtureRequest, by_name: LocalBrokerGroup) -> Pinned:
    return pinned(by_name, request.param)


def pinned(group: LocalBrokerGroup, role: str) -> Pinned:
    """The endpoint of the group's leader, or of one of its followers."""
    leader = leader_id(group)
    node = leader if role == "leader" else next(i for i in sorted(group.peers) if i != leader)
    return Pinned(group.endpoints[node], role)


@contextmanager
def started(via: Pinned, group: str, topic: str, expression: str = "*", sql: bool = False) -> Iterator[Any]:
    """A SimpleConsumer whose group has made its first receive (it gets what is sent from now on)."""
    kind = FilterType.SQL if sql else FilterType.TAG
    c = SimpleConsumer(config(via), group, {topic: FilterExpression(expression, kind)}, await_duration=1)
    c.startup()
    try:
        assert receive(c, 32, 20) == []
        yield c
    finally:
        c.shutdown()


def admin(via: Pinned, *argv: str) -> None:
    """`dledger admin --endpoints VIA ARGV...` (it follows the replica's answer to the master)."""
    assert cli_main(["admin", "--endpoints", via.access_point, "--timeout", "30", *argv]) == 0


def test_tags_and_a_new_group_starting_at_the_end(via: Pinned) -> None:
    topic = f"mx-tags-{via.role}"
    with producer(via, (topic,)) as p:
        old = send_eventually(p, message(topic, b"before the group", tag="A")).message_id
        with started(via, f"g-{topic}", topic, "A || C") as c:
            want = {send_eventually(p, message(topic, f"a{i}".encode(), tag="A", keys=f"k{i}")).message_id
                    for i in range(4)}  # fmt: skip
            send_eventually(p, message(topic, b"other tag", tag="B"))
            got = drain(c, want)
            assert set(got) == want and old not in got
            assert {m.tag for m in got.values()} == {"A"} and {m.topic for m in got.values()} == {topic}
            assert receive(c, 32, 20) == []  # acknowledged: not again; tag B and the old message: never


def test_sql92_filter(via: Pinned) -> None:
    topic = f"mx-sql-{via.role}"
    cases = [({"price": "20", "region": "eu"}, True), ({"price": "20", "region": "asia"}, False),
             ({"price": "cheap"}, False), ({}, False), ({"price": "11", "region": "us"}, True)]  # fmt: skip
    with producer(via, (topic,)) as p:
        send_eventually(p, message(topic, b"creates the topic"))
        with started(via, f"g-{topic}", topic, "price > 10 AND region IN ('eu', 'us')", sql=True) as c:
            want = set()
            for k, (props, matches) in enumerate(cases):
                msg = message(topic, f"case {k}".encode())
                for key, value in props.items():
                    msg.add_property(key, value)
                mid = send_eventually(p, msg).message_id
                if matches:
                    want.add(mid)
            assert set(drain(c, want)) == want
            assert receive(c, 32, 20) == []


def test_fifo_order_with_a_retry(via: Pinned) -> None:
    """A FIFO group: the next message of a message group waits until the one before is acknowledged; the one
    not acknowledged comes again (attempt 2) before it."""
    topic = f"mx-fifo-{via.role}"
    group = f"g-{topic}"
    admin(via, "topic", "create", topic, "--queues", "2", "--type", "FIFO")
    admin(via, "group", "create", group, "--fifo", "on")
    with producer(via, (topic,)) as p, started(via, group, topic) as c:
        for i in range(12):
            send_eventually(p, message(topic, f"{i % 2}:{i}".encode(), message_group=f"order-{i % 2}"))
        seen: dict[str, list[int]] = {"0": [], "1": []}
        failed: list[int] = []  # the delivery attempts of message 4
        deadline = time.monotonic() + 90
        while sum(map(len, seen.values())) < 12:
            assert time.monotonic() < deadline, f"received only {seen}"
            held: set[str] = set()  # a message group whose message of this batch is left unacknowledged
            for m in receive(c, 32, 2):
                key, n = m.body.decode().split(":")
                assert m.message_group == f"order-{key}"
                if n == "4":
                    failed.append(m.delivery_attempt)
                    if len(failed) == 1:
                        held.add(key)  # not acknowledged: it comes again after 2 s, and only then 6
                if key not in held:
                    seen[key].append(int(n))
                    c.ack(m)
    assert seen == {"0": list(range(0, 12, 2)), "1": list(range(1, 12, 2))}
    assert failed == [1, 2]


def test_delay_and_recall(via: Pinned) -> None:
    topic = f"mx-delay-{via.role}"
    due = int(time.time()) + 3  # this client version sends delivery_timestamp as epoch *seconds*
    with producer(via, (topic,)) as p:
        send_eventually(p, message(topic, b"creates the topic"))
        with started(via, f"g-{topic}", topic) as c:
            kept = send_eventually(p, message(topic, b"kept", delivery_timestamp=due))
            gone = send_eventually(p, message(topic, b"recalled", delivery_timestamp=due))
            assert kept.recall_handle and gone.recall_handle
            assert p.recall_message(topic, gone.recall_handle) == gone.message_id
            with pytest.raises(Exception, match="not waiting"):  # recalled already: nothing left
                p.recall_message(topic, gone.recall_handle)
            got = eventually("the delayed message", lambda: receive(c, 8, 20), timeout=30)
            assert time.time() >= due - 0.05  # released by the master's clock, never early
            assert [m.message_id for m in got] == [kept.message_id] and got[0].delivery_timestamp == due * 1000
            c.ack(got[0])
            assert receive(c, 8, 20) == []  # the recalled one never comes


def test_transactions_commit_rollback_and_check(via: Pinned) -> None:
    topic = f"mx-tx-{via.role}"
    checker = OrphanChecker()
    with producer(via, (topic,), checker=checker) as p:
        send_eventually(p, message(topic, b"creates the topic"))
        with started(via, f"g-{topic}", topic) as c:
            committed, rolled, orphan = p.begin_transaction(), p.begin_transaction(), p.begin_transaction()
            c_id = p.send(message(topic, b"commit me"), committed).message_id
            r_id = p.send(message(topic, b"roll me back"), rolled).message_id
            o_id = p.send(message(topic, b"orphan"), orphan).message_id
            committed.commit()
            rolled.rollback()
            got = drain(c, {c_id, o_id}, timeout=60)  # the orphan: committed by the checker, asked by the broker
            assert o_id in checker.checked and r_id not in got
            assert receive(c, 8, 20) == []


def test_simple_consumer_retry_then_dead_letter(via: Pinned) -> None:
    topic = f"mx-dlq-{via.role}"
    group = f"g-{topic}"
    with producer(via, (topic,)) as p:
        send_eventually(p, message(topic, b"creates the topic"))
        with started(via, f"g-{topic}-reader", f"%DLQ%{group}") as reader, started(via, group, topic) as c:
            mid = send_eventually(p, message(topic, b"bad", tag="t")).message_id
            attempts: list[int] = []
            deadline = time.monotonic() + 60
            while len(attempts) < 2:  # never acknowledged: twice (maxReconsumeTimes 2), then dead-lettered
                assert time.monotonic() < deadline
                attempts += [m.delivery_attempt for m in receive(c, 8, 1) if m.message_id == mid]
            assert attempts == [1, 2]
            dead = None
            while dead is None:
                assert time.monotonic() < deadline, f"the message never reached %DLQ%{group}"
                assert all(m.message_id != mid for m in receive(c, 8, 1)), "delivered a third time"
                dead = next((m for m in receive(reader, 8, 20) if m.message_id == mid), None)
            reader.ack(dead)
    assert dead.topic == f"%DLQ%{group}" and dead.body == b"bad"
    assert dead.properties["DLQ_ORIGIN_TOPIC"] == topic and dead.properties["DLQ_ORIGIN_MESSAGE_ID"] == mid


def test_push_consumer_success_retry_and_dead_letter(via: Pinned) -> None:
    """A listener that succeeds, fails once then succeeds, or always fails: the last reaches the dead-letter
    queue after the group's two attempts, the others are consumed. The dead-letter reader starts after the
    poison message was stored and before it was dead-lettered: it gets it (it was enqueued after its start)."""
    topic = f"mx-push-{via.role}"
    group = f"g-{topic}"
    admin(via, "group", "create", group, "--start", "first", "--max-attempts", "2",
          "--backoff-initial-ms", "200", "--backoff-max-ms", "500")  # fmt: skip
    attempts: dict[bytes, list[int]] = {}
    lock = threading.Lock()

    class Listener(MessageListener):
        def consume(self, msg: Any) -> ConsumeResult:
            with lock:
                seen = attempts.setdefault(msg.body, [])
                seen.append(msg.delivery_attempt)
            if msg.body == b"poison" or (msg.body == b"flaky" and len(seen) == 1):
                return ConsumeResult.FAILURE
            return ConsumeResult.SUCCESS

    with producer(via, (topic,)) as p:
        ids = {body: send_eventually(p, message(topic, body)).message_id for body in (b"ok", b"flaky", b"poison")}
        with started(via, f"{group}-reader", f"%DLQ%{group}") as reader:
            c = PushConsumer(config(via), group, Listener(), {topic: FilterExpression("*")})
            c.startup()
            try:
                dead = set(drain(reader, {ids[b"poison"]}, timeout=60))
                eventually("the others consumed", lambda: len(attempts.get(b"flaky", ())) == 2, timeout=60)
            finally:
                c.shutdown()
    assert dead == {ids[b"poison"]}
    assert attempts == {b"ok": [1], b"flaky": [1, 2], b"poison": [1, 2]}


def test_a_body_of_max_message_size(via: Pinned) -> None:
    topic = f"mx-big-{via.role}"
    body = bytes(range(256)) * (MAX_BODY >> 8)
    with producer(via, (topic,)) as p:
        send_eventually(p, message(topic, b"creates the topic"))
        with started(via, f"g-{topic}", topic) as c:
            mid = send_eventually(p, message(topic, body, tag="big")).message_id
            with pytest.raises(Exception, match=r"41301|body|size|large"):
                p.send(message(topic, body + b"x"))
            got = drain(c, {mid}, timeout=60)
    assert got[mid].body == body


# ---- the official Node.js client: the same scenarios, one script each (tests/rocketmq_v5/node/) ----


def node_script(script: str, via: Pinned, topic: str, group: str) -> dict[str, Any]:
    """Run `node SCRIPT VIA TOPIC GROUP`; its one-line JSON result."""
    node = node_or_skip()
    run = subprocess.run([node, str(NODE_DIR / script), via.access_point, topic, group],
                         capture_output=True, text=True, timeout=180, cwd=NODE_DIR)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_nodejs_tags_sql92_and_a_new_group_starting_at_the_end(via: Pinned) -> None:
    topic = f"mxn-filters-{via.role}"
    r = node_script("filters.js", via, topic, f"g-{topic}")
    assert sorted(r["gotTags"]) == sorted(r["wantTags"]) and len(r["wantTags"]) == 3
    assert r["old"] not in r["gotTags"] and set(r["tagsSeen"]) == {"A"} and r["leftTags"] == []
    assert sorted(r["gotSql"]) == sorted(r["wantSql"]) and len(r["wantSql"]) == 2 and r["leftSql"] == []


def test_nodejs_fifo_order_with_a_retry(via: Pinned) -> None:
    topic = f"mxn-fifo-{via.role}"
    admin(via, "topic", "create", topic, "--queues", "2", "--type", "FIFO")
    admin(via, "group", "create", f"g-{topic}", "--fifo", "on")
    r = node_script("fifo.js", via, topic, f"g-{topic}")
    assert r["seen"] == {"0": list(range(0, 12, 2)), "1": list(range(1, 12, 2))}
    assert r["failed"] == [1, 2]


def test_nodejs_delay_and_recall(via: Pinned) -> None:
    topic = f"mxn-recall-{via.role}"
    r = node_script("recall.js", via, topic, f"g-{topic}")
    assert all(r["handles"]) and r["recallAnswer"] == r["recalled"]
    assert "not waiting" in r["secondRecallError"]
    assert r["kept"] in r["received"] and r["recalled"] not in r["received"]


def test_nodejs_transactions_commit_rollback_and_check(via: Pinned) -> None:
    topic = f"mxn-tx-{via.role}"
    r = node_script("tx.js", via, topic, f"g-{topic}")
    assert sorted(r["received"]) == sorted([r["committed"], r["orphan"]]) and r["left"] == []
    assert r["orphan"] in r["checked"] and r["rolledBack"] not in r["received"]


def test_nodejs_simple_consumer_retry_then_dead_letter(via: Pinned) -> None:
    topic = f"mxn-dlq-{via.role}"
    r = node_script("dlq.js", via, topic, f"g-{topic}")
    assert r["attempts"] == [1, 2] and not r["third"]
    assert r["dead"] == {"id": r["id"], "topic": f"%DLQ%g-{topic}", "origin": topic}


def test_nodejs_push_consumer_success_retry_and_dead_letter(via: Pinned) -> None:
    topic = f"mxn-push-{via.role}"
    admin(via, "group", "create", f"g-{topic}", "--start", "first", "--max-attempts", "2",
          "--backoff-initial-ms", "200", "--backoff-max-ms", "500")  # fmt: skip
    r = node_script("push.js", via, topic, f"g-{topic}")
    assert r["dead"] == [r["ids"]["poison"]]
    assert r["attempts"] == {"ok": [1], "flaky": [1, 2], "poison": [1, 2]}


def test_nodejs_a_body_of_max_message_size(via: Pinned) -> None:
    """The Node.js client sends 4 MiB (the Python client receives it: the Node.js client's channel takes at most
    4 MiB per response, body and envelope) and receives 4 MiB - 64 KiB itself; one byte over 4 MiB is refused."""
    topic = f"mxn-big-{via.role}"
    with producer(via, (topic,)) as p:
        send_eventually(p, message(topic, b"creates the topic"))
    with started(via, f"g-{topic}-py", topic, "big") as c:
        r = node_script("big.js", via, topic, f"g-{topic}")
        got = drain(c, {r["big"]}, timeout=60)
    assert got[r["big"]].body == bytes(range(256)) * (MAX_BODY >> 8)
    assert r["received"] == [r["near"]] and r["same"]
    assert any(word in r["tooBig"] for word in ("size", "41301", "large")), r["tooBig"] or "accepted"
