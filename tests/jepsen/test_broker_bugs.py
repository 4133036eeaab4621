"""Minimal reproductions of the broker anomalies the broker workload found (see docs/testing.md).

Setup of both: a 3-replica `LocalBrokerGroup`; one official Python producer whose only endpoint is a
follower, with the client's own resend switched off (so one `send` is one SendMessage request); the follower
forwards every send to the leader (`MessagingEndpoint._write` in dledger/rocketmq/v5/service.py). The
leader is hit a few times while sends are in flight; afterwards a SimpleConsumer drains the topic and every
stored copy is located by its receipt handle (`topic:queue:offset:seq`).
- `duplicated-send` (SIGKILL of the leader): when the leader dies after the entry reached a follower but
  before it answered, the forward fails with UNAVAILABLE, `_write` loops and forwards the same request to
  the new leader: one request stored twice, OK once;
- `failed-send-delivered` (SIGSTOP of the leader for 6 s): the forward times out (DEADLINE_EXCEEDED, or
  UNAVAILABLE), `_write` answers HA_NOT_AVAILABLE, the code that `codes.RETRY_ELSEWHERE` documents as
  "nothing was written", but the entry was replicated and is committed (the official clients resend after
  HA_NOT_AVAILABLE, so with their default resend this is a duplicate too).
Both are fixed: the endpoint forwards only over a connected channel and treats a forward that failed after
sending as outcome-unknown (SLAVE_PERSISTENCE_TIMEOUT, never forwarded again). Slow: real processes and faults.
"""

from __future__ import annotations

import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dledger.cli.broker import LocalBrokerGroup
from dledger.client.client import DLedgerClient
from jepsen_like.broker_workload import _no_resend, status_code

pytestmark = pytest.mark.process

TOPIC = "bug-topic"
HA_NOT_AVAILABLE = 50002
ROUNDS = 6


def _leader(g: LocalBrokerGroup, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {i: a for i, a in g.peers.items() if g.alive(i)}
        with DLedgerClient(live, group=g.group) as c:
            leaders = [n.id for n in c.status(timeout=1.0) if n.reachable and n.role == "leader"]
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.1)
    raise AssertionError("no leader")


def _lead_elsewhere(g: LocalBrokerGroup, node: str) -> str:
    """Transfer the leadership away from `node` (within a deadline); the leader."""
    deadline = time.monotonic() + 30
    while (leader := _leader(g)) == node:
        assert time.monotonic() < deadline, f"{node} kept the leadership"
        try:
            with DLedgerClient(dict(g.peers), group=g.group) as c:
                c.transfer_leadership(next(i for i in g.peers if i != node), timeout=2.0)
        except Exception:
            time.sleep(0.2)
    return leader


def _kill(g: LocalBrokerGroup, leader: str) -> None:
    g.kill(leader)
    _leader(g)
    g.start(leader)


def _pause(g: LocalBrokerGroup, leader: str) -> None:
    proc = g.procs[leader]
    proc.send_signal(signal.SIGSTOP)
    time.sleep(6.0)  # the fault itself: longer than an election and than the client's 5 s deadline
    proc.send_signal(signal.SIGCONT)
    _leader(g)


def _forwarded_sends_under(g: LocalBrokerGroup, fault: Callable[[LocalBrokerGroup, str], None]) -> dict[str, Any]:
    from rocketmq import ClientConfiguration, Credentials, Message, Producer  # type: ignore[import-untyped]

    follower = next(i for i in g.peers if i != _leader(g))
    producer = Producer(ClientConfiguration(g.endpoints[follower], Credentials(), request_timeout=5), (TOPIC,))
    deadline = time.monotonic() + 60
    while True:  # startup queries the route: retry while the group elects its first leader
        try:
            producer.startup()
            break
        except Exception:
            assert time.monotonic() < deadline, "the producer could not start"
            time.sleep(0.5)
    _no_resend(producer)
    acked: list[str] = []
    refused: list[str] = []  # answered HA_NOT_AVAILABLE: "nothing was written"
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            msg = Message()
            msg.topic, msg.body = TOPIC, f"m{n}".encode()
            try:
                producer.send(msg)
                acked.append(f"m{n}")
            except Exception as exc:
                if status_code(exc) == HA_NOT_AVAILABLE:
                    refused.append(f"m{n}")
                time.sleep(0.05)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        for _ in range(ROUNDS):
            leader = _lead_elsewhere(g, follower)
            at = len(acked)
            while len(acked) < at + 30:  # sends are flowing through the follower
                time.sleep(0.01)
            fault(g, leader)
    finally:
        stop.set()
        thread.join(30)
        producer.shutdown()
    return {"acked": acked, "refused": refused, "copies": _drain(g, set(acked))}


def _drain(g: LocalBrokerGroup, want: set[str]) -> dict[str, set[tuple[int, int]]]:
    """body -> its stored positions (queue, offset): receive until every body in `want` came, then 8 s more."""
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

    config = ClientConfiguration(g.access_point, Credentials(), request_timeout=5)
    consumer = SimpleConsumer(config, "bug-group", {TOPIC: FilterExpression("*")}, await_duration=1)
    consumer.startup()
    copies: dict[str, set[tuple[int, int]]] = {}
    deadline, last = time.monotonic() + 120, time.monotonic()
    try:
        while time.monotonic() < deadline and (not want <= set(copies) or time.monotonic() - last < 8):
            try:
                batch: list[Any] = consumer.receive(32, 5)
            except Exception:
                continue
            for m in batch:
                last = time.monotonic()
                _, queue, offset, _ = m.receipt_handle.rsplit(":", 3)
                copies.setdefault(m.body.decode(), set()).add((int(queue), int(offset)))
                try:
                    consumer.ack(m)
                except Exception:
                    pass  # delivered again later; its position is the same
    finally:
        consumer.shutdown()
    assert want <= set(copies), f"{len(want - set(copies))} acknowledged messages were never delivered"
    return copies


@pytest.fixture
def group(tmp_path: pathlib.Path) -> Any:
    g = LocalBrokerGroup.create(
        tmp_path, extra={"maxReconsumeTimes": "1000", "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"}
    )
    g.start_all()
    try:
        yield g
    finally:
        g.stop_all()


@pytest.mark.slow
def test_a_forwarded_send_is_stored_once_when_the_leader_dies(group: LocalBrokerGroup) -> None:
    out = _forwarded_sends_under(group, _kill)
    twice = {body: where for body, where in out["copies"].items() if len(where) > 1}
    assert not twice, f"one send stored more than once: {twice}"


@pytest.mark.slow
def test_a_send_answered_ha_not_available_was_not_written(group: LocalBrokerGroup) -> None:
    out = _forwarded_sends_under(group, _pause)
    written = [body for body in out["refused"] if body in out["copies"]]
    assert not written, f"answered HA_NOT_AVAILABLE ('nothing was written') but delivered: {written}"
