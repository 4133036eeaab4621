"""The client's retry policy, driven with scripted replies: no sockets, no clocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dledger._proto import dledger_pb2 as pb
from dledger.client.client_policy import (
    Call,
    DLedgerError,
    InvalidRequestError,
    NotLeaderError,
    NotWrittenError,
    OutcomeUnknownError,
    Route,
    RpcOutcome,
    Sleep,
    run_request,
)

PEERS = {"n0": "h:1", "n1": "h:2", "n2": "h:3"}


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def drive(
    route: Route, replies: Callable[[Call], Any], *, write: bool = True, timeout: float = 1.0
) -> tuple[Any, list[Call]]:
    """Run the policy; `replies(call)` answers each call. Sleeps advance the fake clock."""
    clock = FakeClock()
    calls: list[Call] = []
    gen = run_request(route, "Append", object(), write=write, timeout=timeout, rpc_timeout=0.5, now=clock)
    try:
        effect = next(gen)
        while True:
            if isinstance(effect, Sleep):
                assert effect.seconds >= 0
                clock.t += max(effect.seconds, 0.001)
                effect = gen.send(None)
            else:
                calls.append(effect)
                clock.t += 0.001
                effect = gen.send(replies(effect))
    except StopIteration as stop:
        return stop.value, calls


def ok(first_index: int = 5) -> pb.AppendResponse:
    return pb.AppendResponse(status=pb.STATUS_OK, first_index=first_index, term=2)


def not_leader(leader: str = "", address: str = "") -> pb.AppendResponse:
    return pb.AppendResponse(status=pb.STATUS_NOT_LEADER, leader_id=leader, leader_address=address)


def test_follows_the_leader_hint_without_sleeping() -> None:
    route = Route(PEERS)
    reply, calls = drive(route, lambda c: ok() if c.node_id == "n2" else not_leader("n2", "h:3"))
    assert reply.first_index == 5
    assert [c.node_id for c in calls] == ["n0", "n2"]
    assert route.leader == "n2"
    assert all(c.must_connect for c in calls)


def test_learns_a_leader_outside_the_configured_peers() -> None:
    route = Route(PEERS)
    reply, calls = drive(route, lambda c: ok() if c.node_id == "n9" else not_leader("n9", "h:9"))
    assert [c.node_id for c in calls] == ["n0", "n9"] and route.peers["n9"] == "h:9"
    assert reply.status == pb.STATUS_OK


def test_unreachable_nodes_are_skipped() -> None:
    route = Route(PEERS)
    answers = {"n0": RpcOutcome.NOT_CONNECTED, "n1": RpcOutcome.NOT_CONNECTED, "n2": ok(9)}
    reply, calls = drive(route, lambda c: answers[c.node_id])
    assert [c.node_id for c in calls] == ["n0", "n1", "n2"] and reply.first_index == 9


def test_a_write_that_fails_after_sending_has_an_unknown_outcome_and_is_not_retried() -> None:
    route = Route(PEERS)
    with pytest.raises(OutcomeUnknownError):
        drive(route, lambda c: RpcOutcome.FAILED_AFTER_SEND)
    route = Route(PEERS)
    with pytest.raises(OutcomeUnknownError):
        drive(route, lambda c: pb.AppendResponse(status=pb.STATUS_UNAVAILABLE, message="lost leadership"))


def test_a_read_that_fails_after_sending_is_retried() -> None:
    route = Route(PEERS)
    answers = iter([RpcOutcome.FAILED_AFTER_SEND, pb.AppendResponse(status=pb.STATUS_UNAVAILABLE), ok(3)])
    reply, calls = drive(route, lambda c: next(answers), write=False)
    assert reply.first_index == 3 and len(calls) == 3
    assert not any(c.must_connect for c in calls)


def test_no_leader_until_the_deadline_is_definitely_not_written() -> None:
    route = Route(PEERS)
    with pytest.raises(NotLeaderError) as info:
        drive(route, lambda c: not_leader(), timeout=0.2)
    assert isinstance(info.value, NotWrittenError)
    assert "not the leader" in str(info.value)


def test_busy_backs_off_exponentially_then_succeeds() -> None:
    route = Route({"n0": "h:1"})
    answers = iter([pb.AppendResponse(status=pb.STATUS_BUSY)] * 4 + [ok()])
    clock = FakeClock()
    gen = run_request(route, "Append", object(), write=True, timeout=5, rpc_timeout=1, now=clock)
    sleeps = []
    effect = next(gen)
    with pytest.raises(StopIteration):
        while True:
            if isinstance(effect, Sleep):
                sleeps.append(effect.seconds)
                clock.t += effect.seconds
                effect = gen.send(None)
            else:
                effect = gen.send(next(answers))
    assert sleeps == sorted(sleeps) and sleeps[-1] == 2 * sleeps[-2]


@pytest.mark.parametrize("status", [pb.STATUS_INVALID, pb.STATUS_WRONG_GROUP])
def test_invalid_requests_are_not_retried(status: int) -> None:
    route = Route(PEERS)
    with pytest.raises(InvalidRequestError):
        drive(route, lambda c: pb.AppendResponse(status=status, message="bad"))


def test_refused_by_grpc_is_invalid() -> None:
    with pytest.raises(InvalidRequestError):
        drive(Route(PEERS), lambda c: RpcOutcome.REFUSED)


def test_read_not_found_is_returned_not_retried() -> None:
    reply, calls = drive(Route(PEERS), lambda c: pb.GetResponse(status=pb.STATUS_NOT_FOUND), write=False)
    assert reply.status == pb.STATUS_NOT_FOUND and len(calls) == 1


def test_read_deadline_raises_a_plain_client_error() -> None:
    with pytest.raises(DLedgerError) as info:
        drive(Route(PEERS), lambda c: RpcOutcome.NOT_CONNECTED, write=False, timeout=0.1)
    assert not isinstance(info.value, NotWrittenError | OutcomeUnknownError)


def test_rpc_timeout_never_exceeds_the_remaining_deadline() -> None:
    _, calls = drive(Route(PEERS), lambda c: ok(), timeout=0.3)
    assert calls[0].timeout == pytest.approx(0.3)


def test_route_needs_peers() -> None:
    with pytest.raises(ValueError, match="at least one peer"):
        Route({})


def test_after_an_unknown_outcome_the_next_request_tries_another_node() -> None:
    """A paused node accepts the connection but never answers: the client must not stick to it."""
    route = Route(PEERS)
    with pytest.raises(OutcomeUnknownError):
        drive(route, lambda c: RpcOutcome.FAILED_AFTER_SEND if c.node_id == "n0" else ok())
    reply, calls = drive(route, lambda c: RpcOutcome.FAILED_AFTER_SEND if c.node_id == "n0" else ok(4))
    assert reply.first_index == 4 and calls[0].node_id != "n0"


def test_a_leader_that_answers_unavailable_is_not_asked_first_again() -> None:
    route = Route(PEERS)
    route.leader = "n1"
    with pytest.raises(OutcomeUnknownError):
        drive(route, lambda c: pb.AppendResponse(status=pb.STATUS_UNAVAILABLE, message="lost leadership"))
    assert route.leader is None


@pytest.mark.parametrize("turn", range(3))
def test_a_leader_whose_outcome_is_unknown_is_never_the_next_node_tried(turn: int) -> None:
    """Whatever the turn was, the request after an unknown outcome on the leader starts elsewhere (the
    leader may just have died; its channel can still look ready for a moment)."""
    route = Route(PEERS)
    route._turn = turn
    route.leader = "n2"
    with pytest.raises(OutcomeUnknownError):
        drive(route, lambda c: RpcOutcome.FAILED_AFTER_SEND)
    _, calls = drive(route, lambda c: ok())
    assert calls[0].node_id != "n2"


def _drive_timed(
    route: Route, replies: Callable[[Call, float], Any], timeout: float = 5.0
) -> tuple[Any, list[Call], list[float]]:
    """Like `drive`, but `replies` also gets the fake time; returns the sleeps too."""
    clock = FakeClock()
    calls: list[Call] = []
    sleeps: list[float] = []
    gen = run_request(route, "Append", object(), write=True, timeout=timeout, rpc_timeout=0.5, now=clock)
    try:
        effect = next(gen)
        while True:
            if isinstance(effect, Sleep):
                sleeps.append(effect.seconds)
                clock.t += max(effect.seconds, 0.001)
                effect = gen.send(None)
            else:
                calls.append(effect)
                clock.t += 0.001
                effect = gen.send(replies(effect, clock.t))
    except StopIteration as stop:
        return stop.value, calls, sleeps


def test_stale_hints_to_a_dead_leader_are_not_chased_and_the_new_leader_is_found_soon() -> None:
    """n0 died; the followers name it until n2 wins an election at t=0.3 s."""

    def replies(call: Call, t: float) -> Any:
        if call.node_id == "n0":
            return RpcOutcome.NOT_CONNECTED
        if t < 0.3:
            return not_leader("n0", "h:1")
        return ok(7) if call.node_id == "n2" else not_leader("n2", "h:3")

    route = Route(PEERS)
    route.leader = "n0"
    reply, calls, sleeps = _drive_timed(route, replies)
    assert reply.first_index == 7 and route.leader == "n2"
    # the dead node is looked at about once per 0.1 s, not after every stale hint
    assert sum(c.node_id == "n0" for c in calls) <= 6
    # while no leader answers, it asks again at least every 20 ms: found within ~20 ms of the election
    assert max(sleeps) <= 0.02
    assert sum(sleeps) < 0.3 + 0.05


def test_a_leader_found_unreachable_once_is_asked_again_when_it_is_back() -> None:
    """n2 leads but its channel is reconnecting for 0.15 s; n1 keeps naming it; n0 is dead."""

    def replies(call: Call, t: float) -> Any:
        if call.node_id == "n0" or (call.node_id == "n2" and t < 0.15):
            return RpcOutcome.NOT_CONNECTED
        return ok(8) if call.node_id == "n2" else not_leader("n2", "h:3")

    reply, calls, _ = _drive_timed(Route(PEERS), replies)
    assert reply.first_index == 8
    assert calls[-1].node_id == "n2"
