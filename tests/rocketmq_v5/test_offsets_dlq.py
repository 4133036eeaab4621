"""The offset calls (QueryOffset, GetOffset, UpdateOffset), PullMessage, ForwardMessageToDeadLetterQueue,
and the broker configuration keys of the endpoint."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

import grpc
import pytest
from rocketmq.grpc_protocol import definition_pb2 as d
from rocketmq.grpc_protocol import service_pb2 as s
from rocketmq.grpc_protocol import service_pb2_grpc as sg

from dledger.cli.broker import LocalBrokerGroup
from dledger.node.config import ConfigError, NodeConfig
from dledger.rocketmq.v5.config import EndpointConfig
from tests.rocketmq_v5.util import eventually

pytestmark = pytest.mark.process

C = d.Code
MD = [("x-mq-client-id", "test-client")]


def _send(st: Any, topic: str, body: bytes, mid: str) -> Any:
    m = d.Message(body=body)
    m.topic.name = topic
    m.system_properties.message_id = mid
    m.system_properties.message_type = d.MessageType.NORMAL
    return st.SendMessage(s.SendMessageRequest(messages=[m]), metadata=MD, timeout=10)


def _mq(topic: str, queue: int) -> Any:
    return d.MessageQueue(topic=d.Resource(name=topic), id=queue)


def test_offsets_and_pull(group: LocalBrokerGroup) -> None:
    with grpc.insecure_channel(group.endpoints["n2"]) as ch:
        st = sg.MessagingServiceStub(ch)
        ids = [f"OFF-{i}" for i in range(3)]
        assert all(_send(st, "offsets", b"o", mid).status.code == C.OK for mid in ids)

        def ends() -> list[int] | None:
            out = [st.QueryOffset(s.QueryOffsetRequest(message_queue=_mq("offsets", q), query_offset_policy=1),
                                  metadata=MD, timeout=5).offset for q in range(8)]  # fmt: skip
            return out if sum(out) == 3 else None  # this replica may apply a moment after the commit

        end = eventually("the three messages applied here", ends, timeout=30)
        queue = next(q for q, n in enumerate(end) if n)
        begin = st.QueryOffset(s.QueryOffsetRequest(message_queue=_mq("offsets", queue)), metadata=MD, timeout=5)
        assert begin.status.code == C.OK and begin.offset == 0
        pull = s.PullMessageRequest(group=d.Resource(name="g-off"), message_queue=_mq("offsets", queue), batch_size=8)
        pulled = list(st.PullMessage(pull, metadata=MD, timeout=10))
        assert pulled[0].status.code == C.OK
        assert {r.message.system_properties.message_id for r in pulled if r.HasField("message")} <= set(ids)
        assert pulled[-1].next_offset == end[queue]
        sql = {"type": d.FilterType.SQL, "expression": "missing > 1"}  # no message has the property
        none = list(st.PullMessage(s.PullMessageRequest(group=d.Resource(name="g-off"), message_queue=_mq(
            "offsets", queue), batch_size=8, filter_expression=sql), metadata=MD, timeout=10))  # fmt: skip
        assert none[0].status.code == C.MESSAGE_NOT_FOUND and none[-1].next_offset == end[queue]
        sql["expression"] = "missing >"
        bad = st.PullMessage(s.PullMessageRequest(group=d.Resource(name="g-off"), message_queue=_mq(
            "offsets", queue), batch_size=8, filter_expression=sql), metadata=MD, timeout=10)  # fmt: skip
        assert next(iter(bad)).status.code == C.ILLEGAL_FILTER_EXPRESSION
        get = s.GetOffsetRequest(group=d.Resource(name="g-off"), message_queue=_mq("offsets", queue))
        assert st.GetOffset(get, metadata=MD, timeout=5).status.code == C.OFFSET_NOT_FOUND
        upd = s.UpdateOffsetRequest(group=d.Resource(name="g-off"), message_queue=_mq("offsets", queue), offset=1)
        assert st.UpdateOffset(upd, metadata=MD, timeout=10).status.code == C.OK  # a write: forwarded if needed
        got = eventually("the committed offset here", lambda: st.GetOffset(get, metadata=MD, timeout=5).offset == 1)
        assert got
        bad = s.QueryOffsetRequest(message_queue=_mq("offsets", 99))
        assert st.QueryOffset(bad, metadata=MD, timeout=5).status.code == C.BAD_REQUEST


def test_forward_to_dead_letter_queue(group: LocalBrokerGroup) -> None:
    with grpc.insecure_channel(group.endpoints["n1"]) as ch:
        st = sg.MessagingServiceStub(ch)
        assert _send(st, "dlq", b"poison", "DLQ-1").status.code == C.OK

        def receive(topic: str, grp: str) -> list[Any]:
            req = s.ReceiveMessageRequest(group=d.Resource(name=grp), batch_size=4, invisible_duration={"seconds": 30},
                                          message_queue=_mq(topic, 0))  # fmt: skip
            return [r.message for r in st.ReceiveMessage(req, metadata=MD, timeout=10) if r.HasField("message")]

        msg = eventually("the poison message", lambda: receive("dlq", "g-dlq"), timeout=30)[0]
        fwd = s.ForwardMessageToDeadLetterQueueRequest(
            group=d.Resource(name="g-dlq"), topic=d.Resource(name="dlq"),
            receipt_handle=msg.system_properties.receipt_handle, message_id="DLQ-1",
        )  # fmt: skip
        assert st.ForwardMessageToDeadLetterQueue(fwd, metadata=MD, timeout=10).status.code == C.OK
        dead = eventually("the message in %DLQ%g-dlq", lambda: receive("%DLQ%g-dlq", "g-dlq-reader"), timeout=30)
        assert dead[0].body == b"poison" and dead[0].system_properties.message_id == "DLQ-1"
        assert dead[0].topic.name == "%DLQ%g-dlq" and dead[0].user_properties["DLQ_ORIGIN_TOPIC"] == "dlq"
        origin = dead[0].system_properties.dead_letter_queue
        assert (origin.topic, origin.message_id) == ("dlq", "DLQ-1")
        again = st.ForwardMessageToDeadLetterQueue(fwd, metadata=MD, timeout=10).status.code
        assert again == C.INVALID_RECEIPT_HANDLE  # acknowledged by the forward: the handle is spent
        assert len(receive("%DLQ%g-dlq", "g-dlq-reader2")) == 1  # and the stale handle put no second copy
        assert receive("dlq", "g-dlq") == []


def test_endpoint_keys(tmp_path: pathlib.Path) -> None:
    peers = {"a": "10.0.0.1:40911", "b": "10.0.0.2:40911"}
    node = NodeConfig(self_id="a", peers=peers, store_dir=tmp_path, peer_secret=b"s" * 16)
    derived = EndpointConfig.from_properties({"grpcServerPort": "9000"}, node)
    assert dict(derived.endpoints) == {"a": "10.0.0.1:9000", "b": "10.0.0.2:9000"}
    assert derived.broker_name == "default" and derived.port == 9000
    given = EndpointConfig.from_properties({"grpcEndpoints": "a-h:1;b-h:2", "brokerName": "bx"}, node)
    assert given.address == "h:1" and given.broker_name == "bx"
    with pytest.raises(ConfigError, match="grpcEndpoints"):
        EndpointConfig.from_properties({"grpcEndpoints": "b-h:2"}, node)
    with pytest.raises(ConfigError, match="accessKey"):
        EndpointConfig.from_properties({"accessKey": "x"}, node)


def test_cli_rejects_a_bad_config(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "broker.conf"
    conf.write_text(f"dLegerSelfId=n0\ndLegerPeers=n0-127.0.0.1:1\nstorePathRootDir={tmp_path}\ngrpcServerPort=0\n")
    run = subprocess.run([sys.executable, "-m", "dledger.cli.broker", "--config", str(conf)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "grpcServerPort" in run.stderr
