"""SIGKILL of the leader replica while the official Python producer and SimpleConsumer run.

Sends may fail or be retried, but every send the producer saw acknowledged is consumed, and both sending
and consuming continue on the new leader. The group is this module's own (the kill must not disturb others).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from dledger.cli.broker import LocalBrokerGroup
from tests.broker_endpoint.util import (
    drain,
    eventually,
    leader_id,
    message,
    producer,
    receive,
    send_eventually,
    simple_consumer,
)

pytestmark = pytest.mark.process


@pytest.fixture
def own_group(tmp_path: object) -> Iterator[LocalBrokerGroup]:
    g = LocalBrokerGroup.create(tmp_path)  # type: ignore[arg-type]
    g.start_all()
    try:
        yield g
    finally:
        g.stop_all()


def test_leader_sigkill_loses_no_acknowledged_message(own_group: LocalBrokerGroup) -> None:
    g = own_group
    acked: list[str] = []
    received: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    with producer(g, ("failover",)) as p, simple_consumer(g, "g-failover", "failover") as c:
        send_eventually(p, message("failover", b"first"))
        receive(c, 32, 5)  # the group's first receive: it gets every message sent from now on

        def produce() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    acked.append(p.send(message("failover", f"m{n}".encode())).message_id)
                except Exception:
                    pass  # not acknowledged: the test promises nothing about it

        def consume() -> None:
            while not stop.is_set():
                try:
                    for m in c.receive(32, 5):
                        received.add(m.message_id)
                        c.ack(m)
                except Exception as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        logs = g.root  # the replicas' logs, for a failure message
        try:
            eventually("20 acknowledged sends", lambda: len(acked) >= 20, timeout=60)
            old = leader_id(g)
            g.kill(old)  # SIGKILL, mid-stream
            at_kill = len(acked)
            new = leader_id(g)
            assert new != old, f"{old} was killed but is still reported as the leader"
            eventually("20 more acknowledged sends after the kill", lambda: len(acked) >= at_kill + 20, timeout=60)
            after_kill = set(acked[at_kill:])
            eventually("messages sent after the kill consumed", lambda: after_kill & received, timeout=60)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        missing = set(acked) - received
        if missing:  # in flight at the kill (popped, response lost): visible again after 5 s
            received |= set(drain(c, missing, timeout=60, invisible_s=5))
    lost = set(acked) - received
    assert not lost, f"lost {len(lost)} of {len(set(acked))} acknowledged messages (replica logs in {logs})"
