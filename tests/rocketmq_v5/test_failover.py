"""SIGKILL of the leader replica while the official clients run (Python; Python with Node.js).

Sends may fail or be retried, but every send a producer saw acknowledged is consumed, FIFO message groups keep
their order, and both sending and consuming continue on the new leader. Each test has its own group (the kill
must not disturb others).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rocketmq import FilterExpression, PushConsumer
from rocketmq.grpc_protocol import TransactionResolution
from rocketmq.v5.consumer.push.message_listener import ConsumeResult, MessageListener
from rocketmq.v5.producer import TransactionChecker

from dledger.cli.broker import LocalBrokerGroup
from dledger.cli.main import main as cli_main
from tests.rocketmq_v5.test_nodejs import NODE_DIR, node_or_skip
from tests.rocketmq_v5.util import (
    config,
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


class _Unknown(TransactionChecker):
    """Every transaction here is committed by its producer: a check (none is expected) learns nothing."""

    def check(self, message: object) -> TransactionResolution:
        return TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED


def _fifo_kept(bodies: list[str]) -> bool:
    """Each message group's first deliveries come in send order (a redelivery may repeat one)."""
    firsts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for body in bodies:
        if body not in seen:
            seen.add(body)
            group, _, seq = body.partition(":")
            firsts.setdefault(group, []).append(int(seq))
    return all(s == sorted(s) for s in firsts.values())


def test_leader_sigkill_with_python_and_nodejs_fifo_push_and_transactions(tmp_path: pathlib.Path) -> None:
    """Both official clients send normal and FIFO messages and consume them (Python: SimpleConsumer on the normal
    topic, PushConsumer on the FIFO topic; Node.js the other way round) while the leader is SIGKILLed: every
    acknowledged send reaches every consumer group, FIFO groups keep each message group's order, and the
    transactions committed before the kill are delivered. Push receives are invisible for 5 s, not 60."""
    node = node_or_skip()
    g = LocalBrokerGroup.create(tmp_path / "brokers", extra={"defaultInvisibleTimeMills": "5000"})
    g.start_all()
    try:
        _ride_out_the_kill(g, node, tmp_path / "node")
    finally:
        g.stop_all()


def _ride_out_the_kill(g: LocalBrokerGroup, node: str, shared: pathlib.Path) -> None:
    normal, fifo = "ko-normal", "ko-fifo"
    with producer(g, ("ko-tx",)) as p:
        send_eventually(p, message("ko-tx", b"creates the topic"))

    def admin(*argv: str) -> None:
        assert cli_main(["admin", "--endpoints", g.access_point, "--timeout", "30", *argv]) == 0

    admin("topic", "create", fifo, "--queues", "2", "--type", "FIFO")
    admin("topic", "create", normal, "--queues", "4")
    admin("group", "create", "py-push", "--fifo", "on", "--start", "first")
    admin("group", "create", "node-push", "--start", "first")
    shared.mkdir()
    acked: dict[str, list[str]] = {"normal": [], "fifo": []}
    simple_got: set[str] = set()
    push_got: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    class Listener(MessageListener):
        def consume(self, msg: Any) -> ConsumeResult:
            with lock:
                push_got.append((msg.message_id, msg.body.decode()))
            return ConsumeResult.SUCCESS

    with (
        producer(g, (normal, fifo, "ko-tx"), checker=_Unknown()) as p,
        simple_consumer(g, "ko-tx-reader", "ko-tx") as tx_reader,
        simple_consumer(g, "py-simple", normal) as c,
    ):
        assert receive(tx_reader, 32, 5) == [] and receive(c, 32, 5) == []  # both groups start here
        committed = set()
        for k in range(3):  # committed before the kill
            tx = p.begin_transaction()
            committed.add(p.send(message("ko-tx", f"tx {k}".encode()), tx).message_id)
            tx.commit()
        push = PushConsumer(config(g), "py-push", Listener(), {fifo: FilterExpression("*")})
        push.startup()
        leader = leader_id(g)
        follower = g.endpoints[next(i for i in sorted(g.peers) if i != leader)]  # the Node.js client's one address
        run = subprocess.Popen([node, str(NODE_DIR / "failover.js"), follower, normal, fifo,
                                "node", str(shared)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=NODE_DIR)  # fmt: skip

        def produce() -> None:
            seq = 0
            while not stop.is_set():
                seq += 1
                for kind, topic, extra in (("normal", normal, {}), ("fifo", fifo, {"message_group": f"py-{seq % 2}"})):
                    try:
                        sent = p.send(message(topic, f"py-{seq % 2}:{seq}".encode(), **extra))
                        acked[kind].append(sent.message_id)
                    except Exception:
                        pass  # not acknowledged: nothing is promised

        def consume() -> None:
            while not stop.is_set():
                try:
                    for m in c.receive(32, 5):
                        simple_got.add(m.message_id)
                        c.ack(m)
                except Exception:
                    pass  # a leader change: tried again

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        try:
            eventually("the Node.js consumers started", lambda: (shared / "consuming").exists() or run.poll())
            assert run.poll() is None, "the Node.js script stopped"
            for t in threads:
                t.start()

            def node_acked() -> int:
                return int((shared / "count").read_text() or 0) if (shared / "count").exists() else 0

            eventually("sends from both clients", lambda: len(acked["fifo"]) >= 10 and node_acked() >= 10)
            g.kill(leader)
            at_kill, node_at_kill = len(acked["fifo"]), node_acked()
            assert leader_id(g) != leader
            eventually("10 more FIFO sends after the kill", lambda: len(acked["fifo"]) >= at_kill + 10, timeout=60)
            eventually("the Node.js producer going on", lambda: node_acked() >= node_at_kill + 10, timeout=60)
        except BaseException as exc:
            run.kill()
            raise AssertionError(f"{exc}; Node.js said: {run.communicate()[1][-2000:]}") from exc
        finally:
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join(30)
            (shared / "stop.tmp").write_text(json.dumps(acked))
            (shared / "stop.tmp").rename(shared / "stop")
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-2000:]
        node_out = json.loads(out.strip().splitlines()[-1])
        all_normal = set(acked["normal"]) | set(node_out["normal"])
        all_fifo = set(acked["fifo"]) | set(node_out["fifo"])
        if all_normal - simple_got:  # in flight at the kill: visible again after 5 s
            simple_got |= set(drain(c, all_normal - simple_got, timeout=60, invisible_s=5))
        eventually("the FIFO topic pushed", lambda: all_fifo <= {mid for mid, _ in push_got}, timeout=90)
        push.shutdown()
        assert committed <= set(drain(tx_reader, committed, timeout=60))
    assert all_normal <= simple_got, f"Python SimpleConsumer lost {len(all_normal - simple_got)}"
    assert all_normal <= set(node_out["push"]), f"Node.js PushConsumer lost {len(all_normal - set(node_out['push']))}"
    node_simple = {mid for mid, _ in node_out["simple"]}
    assert all_fifo <= node_simple, f"Node.js SimpleConsumer lost {len(all_fifo - node_simple)}"
    assert _fifo_kept([body for _, body in push_got]), "Python PushConsumer broke a message group's order"
    assert _fifo_kept([body for _, body in node_out["simple"]]), "Node.js SimpleConsumer broke a message group's order"


def test_delays_recalls_and_retries_survive_a_leader_sigkill(own_group: LocalBrokerGroup) -> None:
    """State that lives in the replicated store across a SIGKILL of the leader: a delayed message due after
    the kill is delivered once and never early; one recalled before the kill and one recalled on the new
    leader never arrive; a message that keeps failing is retried across the kill and dead-lettered after
    the group's max attempts, never delivered more often."""
    g = own_group
    dlq_group = "g-kill-retry"
    assert cli_main(["admin", "--endpoints", g.access_point, "--timeout", "60", "group", "create", dlq_group,
                     "--start", "first", "--max-attempts", "3"]) == 0  # fmt: skip
    with producer(g, ("kill-delay", "kill-retry")) as p:
        send_eventually(p, message("kill-delay", b"creates the topic"))
        send_eventually(p, message("kill-retry", b"creates the topic"))
        with (
            simple_consumer(g, "g-kill-delay", "kill-delay") as c,
            simple_consumer(g, dlq_group, "kill-retry") as retry,
            simple_consumer(g, "g-kill-dlq-reader", f"%DLQ%{dlq_group}") as reader,
        ):
            receive(c, 32, 5)  # the group's first receive: it gets every message sent from now on
            receive(reader, 8, 20)
            due = int(time.time()) + 8  # this client sends delivery_timestamp as epoch seconds
            kept = send_eventually(p, message("kill-delay", b"kept", delivery_timestamp=due))
            before = send_eventually(p, message("kill-delay", b"recalled before", delivery_timestamp=due))
            after = send_eventually(p, message("kill-delay", b"recalled after", delivery_timestamp=due))
            assert p.recall_message("kill-delay", before.recall_handle) == before.message_id
            bad = send_eventually(p, message("kill-retry", b"bad")).message_id
            attempts: list[int] = []
            deadline = time.monotonic() + 60
            while not attempts:  # the first delivery, never acknowledged
                assert time.monotonic() < deadline, "the failing message was never delivered"
                attempts += [m.delivery_attempt for m in receive(retry, 8, 1) if m.message_id == bad]
            old = leader_id(g)
            g.kill(old)
            assert leader_id(g, timeout=60) != old
            recalled = eventually("a recall on the new leader",
                                  lambda: p.recall_message("kill-delay", after.recall_handle), timeout=60)  # fmt: skip
            assert recalled == after.message_id
            got = drain(c, {kept.message_id}, timeout=60)
            assert time.time() >= due - 0.05, "a delayed message was delivered early"
            assert set(got) == {kept.message_id}, got
            assert receive(c, 8, 20) == [], "a recalled or acknowledged message came (again)"
            dead = None
            while dead is None:
                assert time.monotonic() < deadline + 60, f"the failing message never reached %DLQ%{dlq_group}"
                attempts += [m.delivery_attempt for m in receive(retry, 8, 1) if m.message_id == bad]
                dead = next((m for m in receive(reader, 8, 20) if m.message_id == bad), None)
            reader.ack(dead)
    assert attempts and max(attempts) <= 3 and len(attempts) <= 3, attempts
    assert dead.topic == f"%DLQ%{dlq_group}" and dead.body == b"bad"
