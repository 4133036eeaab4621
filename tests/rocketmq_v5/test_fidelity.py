"""RocketMQ 5 behaviour that the official Python client sees on a group with the default broker settings
(`maxReconsumeTimes` 2, to reach the dead-letter queue quickly): a new consumer group starts at the end of each
queue, dead letters report `%DLQ%<group>` and their original topic, and maxMessageSize limits the body alone.
The group is this module's own: the shared one starts new groups at offset 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from rocketmq import FilterExpression, PushConsumer
from rocketmq.v5.consumer.push.message_listener import ConsumeResult, MessageListener

from dledger.cli.broker import LocalBrokerGroup
from tests.rocketmq_v5.util import (
    config,
    drain,
    eventually,
    message,
    producer,
    receive,
    running_group,
    send_eventually,
    simple_consumer,
)
from tests.support import wait_for

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokerGroup]:
    yield from running_group(tmp_path_factory.mktemp("fresh"), {"maxReconsumeTimes": "2"})


def test_a_new_group_receives_only_what_is_sent_after_its_first_receive(fresh: LocalBrokerGroup) -> None:
    with producer(fresh, ("late",)) as p:
        old = {send_eventually(p, message("late", f"old {i}".encode())).message_id for i in range(8)}
        with simple_consumer(fresh, "g-late", "late") as c:
            assert receive(c, 32, 20) == []  # the group's first receive: history is not delivered
            new = {send_eventually(p, message("late", f"new {i}".encode())).message_id for i in range(8)}
            got = drain(c, new)
            assert set(got) == new
            assert receive(c, 32, 20) == []
        # a group that already consumed keeps its position: it does not jump to the end when it comes back
        again = {send_eventually(p, message("late", f"again {i}".encode())).message_id for i in range(4)}
        with simple_consumer(fresh, "g-late", "late") as c:
            assert set(drain(c, again)) == again
    assert not old & set(got)


def test_a_new_group_waiting_for_a_topic_receives_its_first_messages(fresh: LocalBrokerGroup) -> None:
    with simple_consumer(fresh, "g-waits", "not-yet") as c:
        assert receive(c, 32, 20) == []  # the topic does not exist yet
        with producer(fresh, ("not-yet",)) as p:
            sent = {send_eventually(p, message("not-yet", f"m{i}".encode())).message_id for i in range(4)}
        assert set(drain(c, sent)) == sent


def test_dead_letters_report_the_dlq_topic_and_their_origin(fresh: LocalBrokerGroup) -> None:
    with simple_consumer(fresh, "g-dlq-reader", "%DLQ%g-poison") as reader, simple_consumer(
        fresh, "g-poison", "poison"
    ) as c:
        assert receive(reader, 8, 20) == [] and receive(c, 8, 20) == []  # both groups start here
        with producer(fresh, ("poison",)) as p:
            mid = send_eventually(p, message("poison", b"bad", tag="t", keys="k1")).message_id
        attempts = []
        deadline = time.monotonic() + 60
        while len(attempts) < 2:  # never acknowledged: delivered twice (maxReconsumeTimes 2), then dead-lettered
            assert time.monotonic() < deadline
            attempts += [m.delivery_attempt for m in receive(c, 8, 1) if m.message_id == mid]
        assert attempts == [1, 2]
        dead = None
        while dead is None:  # the poison group's receives move it once its second invisible time is over
            assert time.monotonic() < deadline, "the message never reached %DLQ%g-poison"
            assert all(m.message_id != mid for m in receive(c, 8, 1)), "delivered a third time"
            dead = next((m for m in receive(reader, 8, 20) if m.message_id == mid), None)
        reader.ack(dead)
    assert dead.topic == "%DLQ%g-poison" and dead.body == b"bad" and dead.tag == "t"
    assert dead.properties["DLQ_ORIGIN_TOPIC"] == "poison"
    assert dead.properties["DLQ_ORIGIN_MESSAGE_ID"] == mid


def test_a_body_of_exactly_max_message_size_is_accepted(fresh: LocalBrokerGroup) -> None:
    body = bytes(range(256)) * (4 << 20 >> 8)
    assert len(body) == 4 << 20
    with simple_consumer(fresh, "g-big", "big") as c:
        receive(c, 1, 20)
        with producer(fresh, ("big",)) as p:
            mid = send_eventually(p, message("big", body, tag="big", keys="k")).message_id
            with pytest.raises(Exception, match=r"41301|body|size|large"):
                p.send(message("big", body + b"x"))
        got = drain(c, {mid}, timeout=60)
    assert got[mid].body == body


def test_a_new_push_consumer_group_skips_history(fresh: LocalBrokerGroup) -> None:
    consumed: set[str] = set()
    lock = threading.Lock()

    class Listener(MessageListener):
        def consume(self, msg: object) -> ConsumeResult:
            with lock:
                consumed.add(msg.message_id)  # type: ignore[attr-defined]
            return ConsumeResult.SUCCESS

    with producer(fresh, ("push-late",)) as p:
        old = {send_eventually(p, message("push-late", f"old {i}".encode())).message_id for i in range(6)}
        c = PushConsumer(config(fresh), "g-push-late", Listener(), {"push-late": FilterExpression("*")})
        c.startup()
        try:
            # the group starts at its first receive, which the client makes on its own: probe until one arrives
            probes: set[str] = set()

            def live() -> bool:
                probes.add(send_eventually(p, message("push-late", b"probe")).message_id)
                return wait_for(lambda: bool(probes & consumed), 2.0, "the probe consumed", poll=0.05)

            eventually("the push consumer receiving", live, timeout=60, interval=0.1)
            new = {send_eventually(p, message("push-late", f"new {i}".encode())).message_id for i in range(6)}
            eventually("every new message consumed", lambda: new <= consumed, timeout=60, interval=0.1)
        finally:
            c.shutdown()
    assert not old & consumed
