"""The broker checker on hand-made produce / consume histories: one test per anomaly, and valid ones."""

from __future__ import annotations

from typing import Any

from jepsen_like.broker_checker import check_broker
from jepsen_like.checker import Verdict
from jepsen_like.history import Event, Op, pair_ops

Msg = tuple[str, int, int, int]  # body, queue, offset, delivery attempt


class H:
    """Builds a broker history: each call adds an event one time unit after the last."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.t = 0

    def _e(self, process: str, type_: str, f: str, value: Any = None, **extra: Any) -> H:
        self.t += 10
        self.events.append(Event(self.t, process, type_, f, value, extra))
        return self

    def send(self, p: str, body: str, offset: int, outcome: str = "ok") -> H:
        self._e(p, "invoke", "send", body)
        if outcome == "ok":
            return self._e(p, "ok", "send", body, msg_id=f"id-{body}", offset=offset)
        return self._e(p, outcome, "send", body, error="HA_NOT_AVAILABLE" if outcome == "fail" else "timeout")

    def receive(self, p: str, *msgs: Msg, ack: bool = True) -> H:
        self._e(p, "invoke", "receive")
        self._e(p, "ok", "receive", None, messages=[[b, f"id-{b}", q, o, a] for b, q, o, a in msgs])
        if ack:
            for b, q, o, _ in msgs:
                self._e(p, "invoke", "ack", b)._e(p, "ok", "ack", b, queue=q, offset=o)
        return self

    def drain(self, p: str = "drain-c1.0", quiet: bool = True) -> H:
        return self._e(p, "invoke", "drain")._e(p, "ok", "drain", None, quiet=quiet)

    def ops(self) -> list[Op]:
        return pair_ops(self.events)


FINAL: dict[str, Any] = {"healed": True, "common_index": 10, "entries": [], "replica_problems": []}


def kinds(v: Verdict) -> set[str]:
    return {a.kind for a in v.anomalies}


def test_every_acked_send_delivered_once_is_valid() -> None:
    h = H().send("c0.0.0", "a", 0).send("c0.0.0", "b", 0).receive("c1.0.0", ("a", 0, 0, 1), ("b", 1, 0, 1)).drain()
    v = check_broker(h.ops(), FINAL)
    assert v.valid, v.anomalies
    assert v.stats["sends_ok"] == 2 and v.stats["messages_delivered"] == 2 and v.stats["drained"]


def test_redelivery_after_an_unacked_receive_is_valid() -> None:
    h = H().send("c0.0.0", "a", 0).send("c0.0.0", "b", 1)
    h.receive("c1.0.0", ("a", 0, 0, 1), ("b", 0, 1, 1), ack=False)  # acks lost: both come back
    h.receive("c1.0.0", ("a", 0, 0, 2), ("b", 0, 1, 2)).drain()
    v = check_broker(h.ops(), FINAL)
    assert v.valid, v.anomalies
    assert v.stats["redeliveries"] == 2 and v.stats["deliveries"] == 4


def test_info_sends_may_or_may_not_be_delivered() -> None:
    h = H().send("c0.0.0", "a", 0, outcome="info").send("c0.0.1", "b", 0, outcome="info")
    h.receive("c1.0.0", ("a", 0, 0, 1)).drain()
    v = check_broker(h.ops(), FINAL)
    assert v.valid, v.anomalies
    assert v.stats["info_sends_delivered"] == 1


def test_lost_message() -> None:
    h = H().send("c0.0.0", "a", 0).send("c0.0.0", "b", 1).receive("c1.0.0", ("a", 0, 0, 1)).drain()
    v = check_broker(h.ops(), FINAL)
    assert kinds(v) == {"lost"} and v.stats["lost"] == 1
    assert "'b'" in v.anomalies[0].message


def test_phantom_message() -> None:
    h = H().send("c0.0.0", "a", 0).receive("c1.0.0", ("a", 0, 0, 1), ("zz", 0, 1, 1)).drain()
    assert kinds(check_broker(h.ops(), FINAL)) == {"phantom"}


def test_failed_send_delivered() -> None:
    h = H().send("c0.0.0", "a", 0, outcome="fail").receive("c1.0.0", ("a", 0, 0, 1)).drain()
    assert kinds(check_broker(h.ops(), FINAL)) == {"failed-send-delivered"}


def test_one_send_stored_twice() -> None:
    h = H().send("c0.0.0", "a", 0).receive("c1.0.0", ("a", 0, 0, 1), ("a", 1, 0, 1)).drain()
    assert kinds(check_broker(h.ops(), FINAL)) == {"duplicated-send"}


def test_two_bodies_at_one_position_diverge() -> None:
    h = H().send("c0.0.0", "a", 0).send("c0.0.0", "b", 0)
    h.receive("c1.0.0", ("a", 0, 0, 1), ack=False).receive("c1.0.0", ("b", 0, 0, 2)).drain()
    assert "divergent" in kinds(check_broker(h.ops(), FINAL))


def test_receipt_offset_must_match_the_delivered_position() -> None:
    h = H().send("c0.0.0", "a", 5).receive("c1.0.0", ("a", 0, 0, 1)).drain()
    assert kinds(check_broker(h.ops(), FINAL)) == {"receipt-mismatch"}


def test_redelivered_after_a_completed_ack() -> None:
    h = H().send("c0.0.0", "a", 0).receive("c1.0.0", ("a", 0, 0, 1)).receive("c1.0.0", ("a", 0, 0, 2)).drain()
    assert kinds(check_broker(h.ops(), FINAL)) == {"redelivered-after-ack"}


def test_first_deliveries_of_a_queue_go_forward() -> None:
    sends = H().send("c0.0.0", "a", 0).send("c0.0.0", "b", 1)
    within = H()
    within.events = list(sends.events)
    within.t = sends.t
    within.receive("c1.0.0", ("b", 0, 1, 1), ("a", 0, 0, 1)).drain()
    assert kinds(check_broker(within.ops(), FINAL)) == {"queue-order"}
    across = H().send("c0.0.0", "a", 0).send("c0.0.0", "b", 1)
    across.receive("c1.0.0", ("b", 0, 1, 1)).receive("c2.0.0", ("a", 0, 0, 1)).drain()
    assert kinds(check_broker(across.ops(), FINAL)) == {"queue-order"}
    twice = H().send("c0.0.0", "a", 0).receive("c1.0.0", ("a", 0, 0, 1), ack=False)
    twice.receive("c2.0.0", ("a", 0, 0, 1)).drain()
    assert kinds(check_broker(twice.ops(), FINAL)) == {"queue-order"}


def test_other_queues_do_not_order_each_other() -> None:
    h = H().send("c0.0.0", "a", 5).send("c0.0.0", "b", 0)
    h.receive("c1.0.0", ("a", 0, 5, 1)).receive("c1.0.0", ("b", 1, 0, 1))
    h.receive("c1.0.0", *[(f"x{k}", 0, k, 1) for k in range(5)]).drain()
    v = check_broker(h.ops(), FINAL)
    assert kinds(v) == {"phantom", "queue-order"}  # x0..x4 were never sent, and queue 0 went backwards


def test_a_stored_message_left_behind_after_a_quiet_drain() -> None:
    h = H().send("c0.0.0", "a", 0, outcome="info").send("c0.0.0", "b", 1)
    h.receive("c1.0.0", ("b", 0, 1, 1)).drain()
    v = check_broker(h.ops(), FINAL)
    assert kinds(v) == {"undelivered-offset"}
    assert "offsets 0 " in v.anomalies[0].message


def test_a_drain_that_never_went_quiet_is_reported() -> None:
    h = H().send("c0.0.0", "a", 0).receive("c1.0.0", ("a", 0, 0, 1)).drain(quiet=False)
    assert kinds(check_broker(h.ops(), FINAL)) == {"undrained"}


def test_unhealed_cluster_and_replica_problems_come_from_the_final_state() -> None:
    h = H().send("c0.0.0", "a", 0).receive("c1.0.0", ("a", 0, 0, 1)).drain()
    final = {**FINAL, "healed": False, "replica_problems": ["n1: bytes differ"]}
    assert kinds(check_broker(h.ops(), final)) == {"unhealed", "replica-mismatch"}


def test_only_answers_that_promise_nothing_was_written_are_failures() -> None:
    from rocketmq.v5.exception import InternalErrorException, ProxyTimeoutException

    from jepsen_like.broker_workload import classify

    class FakeRpcError(Exception):  # grpc.aio.AioRpcError: `code` is a method
        def code(self) -> str:
            return "UNAVAILABLE"

    assert classify(InternalErrorException("no leader", 50002)) == "fail"  # HA_NOT_AVAILABLE
    assert classify(InternalErrorException("bad request", 40000)) == "fail"
    assert classify(InternalErrorException("request timeout", 40800)) == "info"
    assert classify(ProxyTimeoutException("replication timeout", 50402)) == "info"
    assert classify(FakeRpcError()) == "info"
    assert classify(TimeoutError()) == "info"


def test_the_broker_runs_of_a_campaign_are_opt_in() -> None:
    from jepsen_like.campaign import BROKER_PLAN, BROKER_SHORT, LONG_PLAN, SHORT_PLAN, plans

    assert plans(short=True, with_broker=False, broker_only=False) == SHORT_PLAN
    assert plans(short=True, with_broker=True, broker_only=False) == SHORT_PLAN + BROKER_SHORT
    assert plans(short=True, with_broker=False, broker_only=True) == BROKER_SHORT
    assert plans(short=False, with_broker=False, broker_only=False) == LONG_PLAN
    mixed = plans(short=False, with_broker=True, broker_only=False)
    assert [p for p in mixed if p.workload == "log"] == LONG_PLAN
    assert {p.workload for p in mixed} == {"log", "broker"} and BROKER_SHORT[0].workload == "broker"
    assert plans(short=False, with_broker=False, broker_only=True) == BROKER_PLAN
