"""Malformed, unsupported and unauthorized requests get the protocol's status codes; followers forward.

These call `MessagingService` directly with the stubs of the official client package, so each request can
be exactly as malformed as the test needs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from rocketmq import ClientConfiguration, Credentials
from rocketmq.grpc_protocol import definition_pb2 as d
from rocketmq.grpc_protocol import service_pb2 as s
from rocketmq.grpc_protocol import service_pb2_grpc as sg
from rocketmq.v5.util import Signature

from dledger.broker_adapter.admin_client import AdminClient
from dledger.broker_adapter.signature import check_signature, sign
from dledger.cli.broker import LocalBrokerGroup
from dledger.cli.main import main as cli_main
from tests.rocketmq_v5.util import config, eventually, leader_id, message, producer, send_eventually

pytestmark = pytest.mark.process

C = d.Code
MD = [("x-mq-client-id", "test-client")]


@pytest.fixture
def stub(group: LocalBrokerGroup) -> Iterator[Any]:
    with grpc.insecure_channel(group.endpoints["n0"]) as channel:
        yield sg.MessagingServiceStub(channel)


def _msg(topic: str, body: bytes, mid: str = "ID-1", **sp: Any) -> Any:
    m = d.Message(body=body)
    m.topic.name = topic
    m.system_properties.message_id = mid
    m.system_properties.message_type = sp.pop("message_type", d.MessageType.NORMAL)
    for k, v in sp.items():
        setattr(m.system_properties, k, v)
    return m


def _receive(stub: Any, **fields: Any) -> list[Any]:
    req = s.ReceiveMessageRequest(batch_size=fields.pop("batch_size", 1), **fields)
    req.group.name = req.group.name or "g-codes"
    req.message_queue.topic.name = req.message_queue.topic.name or "codes"
    return list(stub.ReceiveMessage(req, metadata=MD, timeout=10))


def test_bad_requests_get_4xx_codes(stub: Any) -> None:
    assert stub.QueryRoute(s.QueryRouteRequest(), metadata=MD, timeout=5).status.code == C.ILLEGAL_TOPIC
    bad_name = s.QueryRouteRequest(topic=d.Resource(name="no spaces allowed"))
    assert stub.QueryRoute(bad_name, metadata=MD, timeout=5).status.code == C.ILLEGAL_TOPIC
    send = stub.SendMessage
    assert send(s.SendMessageRequest(), metadata=MD, timeout=5).status.code == C.BAD_REQUEST
    empty = s.SendMessageRequest(messages=[_msg("codes", b"")])
    assert send(empty, metadata=MD, timeout=5).status.code == C.MESSAGE_BODY_EMPTY
    no_id = s.SendMessageRequest(messages=[_msg("codes", b"x", mid="")])
    assert send(no_id, metadata=MD, timeout=5).status.code == C.ILLEGAL_MESSAGE_ID
    fifo = s.SendMessageRequest(messages=[_msg("codes", b"x", message_type=d.MessageType.FIFO)])
    assert send(fifo, metadata=MD, timeout=5).status.code == C.ILLEGAL_MESSAGE_GROUP
    big = s.SendMessageRequest(messages=[_msg("codes", b"x" * (4 << 20 | 1))])
    assert send(big, metadata=MD, timeout=10).status.code == C.MESSAGE_BODY_TOO_LARGE
    far = _msg("codes-delay", b"x", message_type=d.MessageType.DELAY)
    far.system_properties.delivery_timestamp.seconds = int(time.time() * 1000)  # ms sent as seconds
    assert send(s.SendMessageRequest(messages=[far]), metadata=MD, timeout=5).status.code == C.ILLEGAL_DELIVERY_TIME
    assert _receive(stub, invisible_duration={"seconds": 0})[0].status.code == C.ILLEGAL_INVISIBLE_TIME
    assert _receive(stub, invisible_duration={"seconds": 5}, batch_size=0)[0].status.code == C.BAD_REQUEST
    sql = {"type": d.FilterType.SQL, "expression": "a > 1 AND b"}
    bad_sql = _receive(stub, invisible_duration={"seconds": 5}, filter_expression=sql)[0].status
    assert bad_sql.code == C.ILLEGAL_FILTER_EXPRESSION and "column 11" in bad_sql.message
    ack = s.AckMessageRequest(entries=[s.AckMessageEntry(message_id="x", receipt_handle="codes:0:99:1")])
    ack.group.name = "g-codes"
    assert stub.AckMessage(ack, metadata=MD, timeout=5).status.code == C.INVALID_RECEIPT_HANDLE
    end = s.EndTransactionRequest(transaction_id="nope", resolution=d.TransactionResolution.COMMIT)
    assert stub.EndTransaction(end, metadata=MD, timeout=5).status.code == C.INVALID_TRANSACTION_ID
    assert stub.Heartbeat(s.HeartbeatRequest(client_type=1), timeout=5).status.code == C.CLIENT_ID_REQUIRED
    assert stub.Heartbeat(s.HeartbeatRequest(), metadata=MD, timeout=5).status.code == C.UNRECOGNIZED_CLIENT_TYPE
    assert stub.Heartbeat(s.HeartbeatRequest(client_type=1), metadata=MD, timeout=5).status.code == C.OK


def test_unsupported_calls_answer_a_status_and_never_hang(stub: Any) -> None:
    recall = stub.RecallMessage(s.RecallMessageRequest(recall_handle="x"), metadata=MD, timeout=5)
    assert recall.status.code == C.BAD_REQUEST  # no topic
    bad = s.RecallMessageRequest(topic=d.Resource(name="t"), recall_handle="not-a-handle")
    recall = stub.RecallMessage(bad, metadata=MD, timeout=10)
    assert recall.status.code == C.BAD_REQUEST and "malformed" in recall.status.message
    lite = stub.SyncLiteSubscription(s.SyncLiteSubscriptionRequest(), metadata=MD, timeout=5)
    assert lite.status.code == C.UNSUPPORTED


def test_type_conflicts_with_the_topic_are_refused(group: LocalBrokerGroup, stub: Any) -> None:
    with AdminClient(list(group.endpoints.values()), timeout=30) as admin:
        assert admin.call({"op": "topic.create", "topic": "typed", "type": "NORMAL"})["ok"]
    with producer(group, ("typed",)) as p:
        send_eventually(p, message("typed", b"normal"))
    fifo = _msg("typed", b"x", message_type=d.MessageType.FIFO, message_group="g")
    code = stub.SendMessage(s.SendMessageRequest(messages=[fifo]), metadata=MD, timeout=5).status.code
    assert code == C.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE

    def typed_route() -> Any:  # n0 answers from what it has applied, which may trail the leader a little
        r = stub.QueryRoute(s.QueryRouteRequest(topic=d.Resource(name="typed")), metadata=MD, timeout=5)
        return r if len(r.message_queues[0].accept_message_types) == 1 else None

    route = eventually("n0 to apply the topic's creation", typed_route, timeout=30)
    assert route.status.code == C.OK and len(route.message_queues) == 8
    assert {tuple(q.accept_message_types) for q in route.message_queues} == {(d.MessageType.NORMAL,)}
    assert len(route.message_queues[0].broker.endpoints.addresses) == 3  # no access point sent: every replica
    asked = s.QueryRouteRequest(
        topic=d.Resource(name="typed"), endpoints=d.Endpoints(scheme=1, addresses=[{"host": "127.0.0.1", "port": 1}])
    )
    echoed = stub.QueryRoute(asked, metadata=MD, timeout=5).message_queues[0].broker.endpoints
    assert [(a.host, a.port) for a in echoed.addresses] == [("127.0.0.1", 1)]  # the client's access point


def test_any_replica_serves_writes_followers_forward_to_the_leader(group: LocalBrokerGroup) -> None:
    leader = leader_id(group)
    followers = [i for i in group.peers if i != leader]
    with grpc.insecure_channel(group.endpoints[followers[0]]) as ch:
        sent = sg.MessagingServiceStub(ch).SendMessage(
            s.SendMessageRequest(messages=[_msg("fwd", b"via follower", mid="FWD-1")]), metadata=MD, timeout=10
        )
    assert sent.status.code == C.OK and sent.entries[0].message_id == "FWD-1"
    with grpc.insecure_channel(group.endpoints[followers[1]]) as ch:
        st = sg.MessagingServiceStub(ch)

        def receive() -> list[Any]:
            got = _receive(st, invisible_duration={"seconds": 30}, group=d.Resource(name="g-fwd"),
                           message_queue=d.MessageQueue(topic=d.Resource(name="fwd")), batch_size=4)  # fmt: skip
            return [r.message for r in got if r.HasField("message")]

        msgs = eventually("the message via the other follower", receive, timeout=30)
        assert [m.system_properties.message_id for m in msgs] == ["FWD-1"]
        ack = s.AckMessageRequest(entries=[s.AckMessageEntry(receipt_handle=msgs[0].system_properties.receipt_handle)])
        ack.group.name = "g-fwd"
        assert st.AckMessage(ack, metadata=MD, timeout=10).status.code == C.OK
        assert st.AckMessage(ack, metadata=MD, timeout=10).status.code == C.INVALID_RECEIPT_HANDLE


def test_signatures_are_checked_when_credentials_are_configured(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    g = LocalBrokerGroup.create(tmp_path, nodes=1, extra={"accessKey": "ak1", "secretKey": "sk1"})
    g.start_all()
    try:
        with producer(g, ("auth",), ak="ak1", sk="sk1") as p:
            assert send_eventually(p, message("auth", b"signed")).message_id
        req = s.QueryRouteRequest(topic=d.Resource(name="auth"))
        with grpc.insecure_channel(g.endpoints["n0"]) as ch:
            st = sg.MessagingServiceStub(ch)
            for sk, code in (("sk1", C.OK), ("wrong", C.UNAUTHORIZED)):
                signed = Signature.metadata(config(g, "ak1", sk), "test-client")  # the client's own signing
                assert st.QueryRoute(req, metadata=signed, timeout=5).status.code == code
            assert st.QueryRoute(req, metadata=MD, timeout=5).status.code == C.UNAUTHORIZED
        with producer(g, ("auth",), ak="ak1", sk="wrong") as p, pytest.raises(Exception, match="route"):
            p.send(message("auth", b"badly signed"))  # its route query is refused
        _admin_honours_the_access_key(g, capsys, monkeypatch)
    finally:
        g.stop_all()


def _admin_honours_the_access_key(
    g: LocalBrokerGroup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dledger admin` on a broker with accessKey/secretKey: refused in one line without them or with a wrong
    secret; served with them by flag or by environment (the flags win)."""

    def admin(*flags: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main(["admin", "--endpoints", g.access_point, "--timeout", "20", *flags, "topic", "list"])
        out = capsys.readouterr()
        return code, out.out, out.err

    for flags, why in (
        ((), "not signed"),
        (("--access-key", "ak1", "--secret-key", "wrong"), "signature does not match"),
        (("--access-key", "other", "--secret-key", "sk1"), "unknown access key"),
    ):
        code, out, err = admin(*flags)
        assert (code, out) == (1, ""), err
        assert err.count("\n") == 1 and err.startswith("dledger admin: refused: ") and why in err, err
        assert "accessKey" in err
    code, out, err = admin("--access-key", "ak1", "--secret-key", "sk1")
    assert code == 0 and "auth" in out.split(), err
    monkeypatch.setenv("DLEDGER_ACCESS_KEY", "ak1")
    monkeypatch.setenv("DLEDGER_SECRET_KEY", "sk1")
    assert admin()[0] == 0
    code, _, err = admin("--secret-key", "wrong")
    assert code == 1 and "signature does not match" in err
    monkeypatch.delenv("DLEDGER_SECRET_KEY")
    code, _, err = admin()
    assert code == 2 and err.count("\n") == 1 and "give both" in err


def test_signature_helpers_agree_with_the_official_client() -> None:
    conf = ClientConfiguration("127.0.0.1:1", Credentials("ak1", "sk1"))
    official = Signature.metadata(conf, "test-client")
    assert check_signature(official, "ak1", "sk1") is None
    ours = sign("ak1", "sk1")
    assert check_signature([("authorization", "Bearer t0ken"), *ours], "ak1", "sk1") is None  # beside a token
    assert check_signature(ours, "ak1", "sk2") == "the signature does not match"
    assert check_signature(ours, "ak2", "sk1") == "unknown access key"
    assert "not signed" in (check_signature([("authorization", "MQv2-HMAC-SHA1 junk")], "ak1", "sk1") or "")
    dateless = [(k, v) for k, v in ours if k != "x-mq-date-time"]
    assert check_signature(dateless, "ak1", "sk1") == "the signature does not match"


def test_property_limits_are_refused_with_rocketmq_codes(stub: Any) -> None:
    """maxMessageSize limits the body alone; properties, tag, keys, topic and message group have RocketMQ's own
    limits (16 KiB of user properties with the tag and keys, 128 properties, 127-character topics, ...)."""

    def code(m: Any) -> int:
        return int(stub.SendMessage(s.SendMessageRequest(messages=[m]), metadata=MD, timeout=20).status.code)

    def with_props(props: dict[str, str], body: bytes = b"x", keys: tuple[str, ...] = (), **sp: Any) -> Any:
        m = _msg("limits", body, mid=f"LIM-{time.monotonic_ns()}", **sp)
        m.user_properties.update(props)
        m.system_properties.keys.extend(keys)
        return m

    full = {"p": "v" * (16 * 1024 - 1 - len("tg") - len("k1"))}
    assert code(with_props(full, b"y" * (4 << 20), tag="tg", keys=("k1",))) == C.OK  # 4 MiB body + 16 KiB
    assert code(with_props(full, tag="tg", keys=("k12",))) == C.MESSAGE_PROPERTIES_TOO_LARGE  # one byte more
    assert code(with_props({f"k{i}": "v" for i in range(129)})) == C.MESSAGE_PROPERTIES_TOO_LARGE
    assert code(with_props({f"k{i}": "v" for i in range(128)})) == C.OK
    assert code(with_props({"DLQ_ORIGIN_TOPIC": "spoofed"})) == C.ILLEGAL_MESSAGE_PROPERTY_KEY
    assert code(with_props({"a": "bell\x07"})) == C.ILLEGAL_MESSAGE_PROPERTY_KEY
    assert code(with_props({}, tag="a|b")) == C.ILLEGAL_MESSAGE_TAG
    assert code(with_props({}, keys=("  ",))) == C.ILLEGAL_MESSAGE_KEY
    assert code(_msg("t" * 128, b"x")) == C.ILLEGAL_TOPIC
    assert code(_msg("t" * 127, b"x")) == C.OK
    fifo = d.MessageType.FIFO
    assert code(_msg("limits-fifo", b"x", message_type=fifo, message_group="g" * 64)) == C.ILLEGAL_MESSAGE_GROUP
    assert code(_msg("limits-fifo", b"x", message_type=fifo, message_group="g" * 63)) == C.OK
