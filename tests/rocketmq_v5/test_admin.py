"""Topic and consumer group admin, consumer progress and recall, on a 3-replica group with the official Python
client: `dledger admin` (the CLI, in process) sets topics and groups up, the client sees their effect.
The group is this module's own, with the default broker settings (a new group starts at the end)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from rocketmq.grpc_protocol import definition_pb2 as d
from rocketmq.grpc_protocol import service_pb2 as s
from rocketmq.grpc_protocol import service_pb2_grpc as sg

from dledger.broker_adapter.admin_client import AdminClient
from dledger.cli.broker import LocalBrokerGroup
from dledger.cli.main import main as cli_main
from tests.rocketmq_v5.util import (
    drain,
    eventually,
    leader_id,
    message,
    producer,
    receive,
    running_group,
    send_eventually,
    simple_consumer,
)

pytestmark = pytest.mark.process  # starts processes


@pytest.fixture(scope="module")
def admin_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokerGroup]:
    yield from running_group(tmp_path_factory.mktemp("admin"), {})


def admin(group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`dledger admin --cluster ROOT ARGV...`: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli_main(["admin", "--cluster", str(group.root), "--timeout", "30", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def admin_json(group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = admin(group, capsys, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_topics_through_the_cli(admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]) -> None:
    made = admin_json(admin_group, capsys, "topic", "create", "adm-orders", "--queues", "2", "--type", "FIFO")
    assert made == {"topic": "adm-orders", "queues": 2, "type": "FIFO", "perm": "rw"}
    code, _, err = admin(admin_group, capsys, "topic", "create", "adm-orders")
    assert code == 1 and err.count("\n") == 1 and "BAD_REQUEST" in err and "exists" in err
    code, out, _ = admin(admin_group, capsys, "topic", "list")
    assert code == 0 and out.splitlines()[0].split() == ["TOPIC", "QUEUES", "TYPE", "PERM"]
    assert any(line.split()[:3] == ["adm-orders", "2", "FIFO"] for line in out.splitlines())
    described = admin_json(admin_group, capsys, "topic", "describe", "adm-orders")
    assert [q["queue"] for q in described["queue_offsets"]] == [0, 1]
    admin_json(admin_group, capsys, "topic", "create", "adm-gone", "--queues", "1")
    admin_json(admin_group, capsys, "topic", "update", "adm-gone", "--queues", "3", "--perm", "r")
    assert admin_json(admin_group, capsys, "topic", "describe", "adm-gone")["perm"] == "r"
    assert admin(admin_group, capsys, "topic", "delete", "adm-gone")[0] == 0
    code, _, err = admin(admin_group, capsys, "topic", "describe", "adm-gone")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = admin(admin_group, capsys, "topic", "update", "adm-orders", "--queues", "-1")
    assert code == 1 and "queue count" in err


def test_a_fifo_topic_refuses_normal_messages_with_rocketmqs_code(
    admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_json(admin_group, capsys, "topic", "create", "adm-fifo-only", "--queues", "1", "--type", "FIFO")
    with producer(admin_group, ("adm-fifo-only",)) as p:
        with pytest.raises(Exception) as refused:  # by the client itself, or by the broker before its route knew
            p.send(message("adm-fifo-only", b"plain"))
        assert "40014" in str(refused.value) or "not match with queue accept message types" in str(refused.value)

        def server_answer() -> Any:  # the broker's own answer, from a replica that has applied the creation
            m = d.Message(body=b"plain", topic=d.Resource(name="adm-fifo-only"))
            m.system_properties.message_id = "ADM-PLAIN"
            m.system_properties.message_type = d.MessageType.NORMAL
            with grpc.insecure_channel(admin_group.endpoints["n0"]) as channel:
                answer = sg.MessagingServiceStub(channel).SendMessage(
                    s.SendMessageRequest(messages=[m]), metadata=[("x-mq-client-id", "adm")], timeout=10
                )
            return answer.status if answer.status.code != d.Code.OK else None

        status = eventually("the broker's refusal", server_answer, timeout=60)
        assert status.code == d.Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE
        proxy_words = "TopicMessageType validate failed, the expected type is FIFO, but actual type is NORMAL"
        assert status.message == proxy_words
        assert send_eventually(p, message("adm-fifo-only", b"ordered", message_group="o1")).message_id
    # an auto-created topic takes every type, whichever came first
    with producer(admin_group, ("adm-auto",)) as p:
        send_eventually(p, message("adm-auto", b"plain"))
        assert send_eventually(p, message("adm-auto", b"ordered", message_group="o1")).message_id
        later = int(time.time()) + 60  # this client version sends delivery_timestamp as epoch *seconds*
        assert send_eventually(p, message("adm-auto", b"later", delivery_timestamp=later)).message_id
    assert admin_json(admin_group, capsys, "topic", "describe", "adm-auto")["type"] == "MIXED"


def _attempts(c: Any, mid: str, rounds: int) -> list[int]:
    """Receive without acknowledging until `rounds` deliveries of `mid` were seen; their attempt numbers."""
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while len(seen) < rounds:
        assert time.monotonic() < deadline, f"saw only attempts {seen}"
        seen += [m.delivery_attempt for m in receive(c, 8, 1) if m.message_id == mid]
    return seen


def test_a_fifo_group_with_two_attempts_dead_letters_while_one_with_five_keeps_retrying(
    admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_json(admin_group, capsys, "topic", "create", "adm-retry", "--queues", "1", "--type", "FIFO")
    for name, attempts in (("g-two", "2"), ("g-five", "5")):
        cfg = admin_json(
            admin_group, capsys, "group", "create", name, "--max-attempts", attempts, "--fifo", "on", "--start", "first"
        )
        assert cfg["max_attempts"] == int(attempts) and cfg["fifo"] is True and cfg["start"] == "first"
    with producer(admin_group, ("adm-retry",)) as p:
        mid = send_eventually(p, message("adm-retry", b"fails", message_group="order-1")).message_id
        nxt = send_eventually(p, message("adm-retry", b"after", message_group="order-1")).message_id
    with (
        simple_consumer(admin_group, "g-two", "adm-retry") as two,
        simple_consumer(admin_group, "g-five", "adm-retry") as five,
    ):
        assert _attempts(two, mid, 2) == [1, 2]
        # FIFO: the next message of the order waits until the failing one is dead-lettered, then flows
        got = drain(two, {nxt}, timeout=60, invisible_s=20)
        assert mid not in got
        assert _attempts(five, mid, 3) == [1, 2, 3]
    dlq = admin_json(admin_group, capsys, "topic", "describe", "%DLQ%g-two")
    assert dlq["queue_offsets"][0]["max_offset"] == 1
    code, _, err = admin(admin_group, capsys, "topic", "describe", "%DLQ%g-five")
    assert code == 1 and "NOT_FOUND" in err  # still retrying: nothing dead-lettered
    rows = admin_json(admin_group, capsys, "progress", "g-five", "--topic", "adm-retry")
    assert rows[0]["broker_offset"] == 2 and rows[0]["inflight"] == 1
    code, out, _ = admin(admin_group, capsys, "group", "describe", "g-two")
    assert code == 0 and "max_attempts: 2" in out and "BROKER_OFFSET" in out
    listed = admin_json(admin_group, capsys, "group", "list")
    assert {"g-two", "g-five"} <= {g["group"] for g in listed}


def test_admin_writes_through_one_follower_reach_the_master(
    admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    follower = next(i for i in admin_group.peers if i != leader_id(admin_group))
    capsys.readouterr()
    code = cli_main(["admin", "--endpoints", admin_group.endpoints[follower], "--json", "group", "create", "g-via"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["group"] == "g-via"
    with AdminClient(list(admin_group.endpoints.values()), timeout=30) as client:
        answers = [client.call({"op": "group.describe", "group": "g-via"}) for _ in range(3)]
        assert all(a["ok"] for a in answers)
        assert client.call({"op": "nope"})["code"] == "BAD_REQUEST"
        assert client.call({"op": "group.create"})["error"] == "'group' is required"


def test_a_recalled_delay_message_is_never_delivered(admin_group: LocalBrokerGroup) -> None:
    with simple_consumer(admin_group, "g-recall", "adm-delay") as c:
        assert receive(c, 8, 20) == []  # the group starts here
        with producer(admin_group, ("adm-delay",)) as p:
            when = int(time.time()) + 10  # epoch seconds, as this client version sends them
            recalled = send_eventually(p, message("adm-delay", b"recalled", delivery_timestamp=when))
            kept = send_eventually(p, message("adm-delay", b"kept", delivery_timestamp=when))
            assert recalled.recall_handle and kept.recall_handle
            assert p.recall_message("adm-delay", recalled.recall_handle) == recalled.message_id
            with pytest.raises(Exception, match=r"40400.*not waiting"):
                p.recall_message("adm-delay", recalled.recall_handle)  # recalled already
            got = drain(c, {kept.message_id}, timeout=60)
            assert recalled.message_id not in got
            with pytest.raises(Exception, match=r"40400.*not waiting"):
                p.recall_message("adm-delay", kept.recall_handle)  # delivered already
        later = eventually("no more deliveries", lambda: (receive(c, 8, 20),), timeout=30)[0]
        assert all(m.message_id != recalled.message_id for m in later)


def test_a_new_group_configured_to_start_first_receives_history(
    admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    with producer(admin_group, ("adm-history",)) as p:
        old = {send_eventually(p, message("adm-history", f"old {i}".encode())).message_id for i in range(4)}
    admin_json(admin_group, capsys, "group", "create", "g-from-first", "--start", "first")
    with simple_consumer(admin_group, "g-from-first", "adm-history") as c:
        assert set(drain(c, old)) == old
    with simple_consumer(admin_group, "g-from-last", "adm-history") as c:
        assert receive(c, 8, 20) == []  # not configured: starts at the end, as RocketMQ 5's proxy


def test_admin_state_survives_a_sigkill_of_the_master(
    admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_json(admin_group, capsys, "group", "create", "g-survives", "--max-attempts", "4", "--fifo", "on")
    admin_json(admin_group, capsys, "topic", "create", "adm-survives", "--queues", "3", "--type", "DELAY")
    old = leader_id(admin_group)
    admin_group.kill(old)
    try:
        eventually("a new leader", lambda: leader_id(admin_group) != old, timeout=60)
        group = admin_json(admin_group, capsys, "group", "describe", "g-survives")
        assert group["max_attempts"] == 4 and group["fifo"] is True
        topic = admin_json(admin_group, capsys, "topic", "describe", "adm-survives")
        assert (topic["type"], topic["queues"]) == ("DELAY", 3)
        admin_json(admin_group, capsys, "group", "update", "g-survives", "--max-attempts", "6")
    finally:
        admin_group.start(old)

        def serving() -> bool:  # the restarted replica answers again (the next tests may call it)
            with AdminClient([admin_group.endpoints[old]], timeout=2) as client:
                return bool(client.call({"op": "topic.list", "any_replica": True})["ok"])

        eventually(f"{old} to serve again", serving, timeout=60)
    assert admin_json(admin_group, capsys, "group", "describe", "g-survives")["max_attempts"] == 6


def test_topic_permissions_refuse_with_forbidden(
    admin_group: LocalBrokerGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_json(admin_group, capsys, "topic", "create", "adm-perm", "--queues", "1", "--perm", "w")
    md = [("x-mq-client-id", "adm")]
    with grpc.insecure_channel(admin_group.endpoints[leader_id(admin_group)]) as channel:
        stub = sg.MessagingServiceStub(channel)
        m = d.Message(body=b"x", topic=d.Resource(name="adm-perm"))
        m.system_properties.message_id = "ADM-PERM-1"
        m.system_properties.message_type = d.MessageType.NORMAL
        assert stub.SendMessage(s.SendMessageRequest(messages=[m]), metadata=md, timeout=10).status.code == d.Code.OK
        queue = d.MessageQueue(topic=d.Resource(name="adm-perm"), id=0)

        def pull_refused() -> bool:
            pull = s.PullMessageRequest(group=d.Resource(name="g-perm"), message_queue=queue, batch_size=8)
            first, *_ = stub.PullMessage(pull, metadata=md, timeout=10)
            return bool(first.status.code == d.Code.FORBIDDEN)

        assert eventually("the permission to apply", pull_refused, timeout=30)
        receive = s.ReceiveMessageRequest(
            group=d.Resource(name="g-perm"), message_queue=queue, batch_size=4, invisible_duration={"seconds": 10}
        )
        answer, *_ = stub.ReceiveMessage(receive, metadata=md, timeout=10)
        assert answer.status.code == d.Code.FORBIDDEN and "not readable" in answer.status.message
        admin_json(admin_group, capsys, "topic", "update", "adm-perm", "--perm", "r")
        m.system_properties.message_id = "ADM-PERM-2"
        sent = stub.SendMessage(s.SendMessageRequest(messages=[m]), metadata=md, timeout=10).status
        assert sent.code == d.Code.FORBIDDEN and "not writable" in sent.message
        route = stub.QueryRoute(s.QueryRouteRequest(topic=d.Resource(name="adm-perm")), metadata=md, timeout=10)
        assert route.message_queues[0].permission == d.Permission.READ
