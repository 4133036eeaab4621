"""The remoting face's administration requests at the protocol level (our codec as the client): topic deletion,
topic and consume statistics, subscription groups, with RocketMQ's codes, headers and body shapes, on the same
state `dledger admin` shows."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import encode_properties
from dledger.rocketmq.remoting.transport import connect, invoke
from tests.rocketmq_remoting.util import InProcessBroker

R = RequestCode
_OBJECT_KEY = re.compile(r"([{,])(\{[^{}]*\}):")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    b = InProcessBroker(tmp_path_factory.mktemp("admin")).start()
    try:
        yield b
    finally:
        b.stop()


def call(b: InProcessBroker, code: int, fields: dict[str, str] | None = None, body: bytes = b"") -> RemotingCommand:
    address = f"127.0.0.1:{b.broker.port}"
    return b.lt.run(invoke(address, RemotingCommand.request(code, fields, body), timeout=30.0))


def send(b: InProcessBroker, topic: str, body: bytes, queue: int) -> RemotingCommand:
    fields = {"b": topic, "e": str(queue), "f": "0", "g": str(int(time.time() * 1000)), "h": "0",
              "i": encode_properties({}), "a": "pg"}  # fmt: skip
    return call(b, R.SEND_MESSAGE_V2, fields, body)


def queue_table(body: bytes) -> dict[tuple[str, str, int], dict[str, Any]]:
    """`offsetTable` of a fastjson body whose keys are MessageQueue objects, decoded independently of our
    writer: each object key is turned into a string key, then read with the standard parser."""
    text = _OBJECT_KEY.sub(lambda m: m.group(1) + json.dumps(m.group(2)) + ":", body.decode())
    out = {}
    for key, value in json.loads(text)["offsetTable"].items():
        mq = json.loads(key)
        assert list(mq) == ["brokerName", "queueId", "topic"]  # fastjson's field order
        out[mq["topic"], mq["brokerName"], mq["queueId"]] = value
    return out


def test_topic_stats_consume_stats_and_delete_topic(broker: InProcessBroker) -> None:
    broker.create_topic("St", 2)
    for i in range(3):
        assert send(broker, "St", b"m%d" % i, 1).code == ResponseCode.SUCCESS
    stats = call(broker, R.GET_TOPIC_STATS_INFO, {"topic": "St"})
    assert stats.code == ResponseCode.SUCCESS
    table = queue_table(stats.body)
    assert set(table) == {("St", "broker-a", 0), ("St", "broker-a", 1)}
    assert table["St", "broker-a", 0] == {"lastUpdateTimestamp": 0, "maxOffset": 0, "minOffset": 0}
    q1 = table["St", "broker-a", 1]
    assert (q1["minOffset"], q1["maxOffset"]) == (0, 3) and q1["lastUpdateTimestamp"] > 0

    commit = {"consumerGroup": "sg", "topic": "St", "queueId": "1", "commitOffset": "2"}
    assert call(broker, R.UPDATE_CONSUMER_OFFSET, commit).code == ResponseCode.SUCCESS
    consume = call(broker, R.GET_CONSUME_STATS, {"consumerGroup": "sg", "topic": "St"})
    assert consume.code == ResponseCode.SUCCESS
    assert fastjson.loads(_OBJECT_KEY.sub(r'\1"k":', consume.body.decode()))["consumeTps"] == 0
    rows = queue_table(consume.body)
    assert rows["St", "broker-a", 1]["brokerOffset"] == 3 and rows["St", "broker-a", 1]["consumerOffset"] == 2
    assert 0 < rows["St", "broker-a", 1]["lastTimestamp"] <= q1["lastUpdateTimestamp"]  # the last one consumed
    assert rows["St", "broker-a", 0] == {"brokerOffset": 0, "consumerOffset": 0, "lastTimestamp": 0}
    every = call(broker, R.GET_CONSUME_STATS, {"consumerGroup": "sg"})  # no topic: each the group consumed
    assert set(queue_table(every.body)) == set(rows)
    assert call(broker, R.GET_CONSUME_STATS, {"consumerGroup": "idle"}).code == ResponseCode.SYSTEM_ERROR

    assert call(broker, R.DELETE_TOPIC_IN_BROKER, {"topic": "St"}).code == ResponseCode.SUCCESS
    assert broker.store.topic("St") is None and broker.store.committed_offset("sg", "St", 1) == -1
    for code, fields in [
        (R.DELETE_TOPIC_IN_BROKER, {"topic": "St"}),
        (R.GET_TOPIC_STATS_INFO, {"topic": "St"}),
        (R.GET_CONSUME_STATS, {"consumerGroup": "sg", "topic": "St"}),
    ]:
        assert call(broker, code, fields).code == ResponseCode.TOPIC_NOT_EXIST


def test_subscription_groups_round_trip_with_dledger_admin_state(broker: InProcessBroker) -> None:
    policy = {"type": "EXPONENTIAL", "exponentialRetryPolicy": {"initial": 500, "max": 60000, "multiplier": 3}}
    config = {"groupName": "billing", "retryMaxTimes": 3, "consumeMessageOrderly": True, "consumeEnable": True,
              "groupRetryPolicy": policy}  # fmt: skip
    r = call(broker, R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=json.dumps(config).encode())
    assert r.code == ResponseCode.SUCCESS, r.remark
    cfg = broker.store.group_config("billing")
    assert cfg is not None
    assert (cfg.max_attempts, cfg.fifo, cfg.backoff_initial_ms, cfg.backoff_max_ms, cfg.backoff_multiplier_milli) == (
        4, True, 500, 60000, 3000,
    )  # fmt: skip
    # an update keeps what the body does not say
    r = call(broker, R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=b'{"groupName":"billing","retryMaxTimes":7}')
    assert r.code == ResponseCode.SUCCESS
    cfg = broker.store.group_config("billing")
    assert cfg is not None and (cfg.max_attempts, cfg.fifo, cfg.backoff_initial_ms) == (8, True, 500)

    wrapper = fastjson.loads(call(broker, R.GET_ALL_SUBSCRIPTIONGROUP_CONFIG).body)
    assert set(wrapper) == {"subscriptionGroupTable", "dataVersion"}
    shown = wrapper["subscriptionGroupTable"]["billing"]
    assert shown["groupName"] == "billing" and shown["retryMaxTimes"] == 7 and shown["consumeMessageOrderly"] is True
    assert shown["groupRetryPolicy"]["exponentialRetryPolicy"] == {"initial": 500, "max": 60000, "multiplier": 3}
    assert shown["consumeEnable"] is True and shown["retryQueueNums"] == 1

    for bad in [b"not json", b"[1]", b'{"retryMaxTimes": 1}', b'{"groupName":"x","retryMaxTimes":-5}',
                b'{"groupName":"x","retryMaxTimes":"many"}', b'{"groupName":"x","retryMaxTimes":1e400}',
                b'{"groupName":"x","consumeMessageOrderly":"yes"}']:  # fmt: skip
        r = call(broker, R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=bad)
        assert r.code == ResponseCode.SYSTEM_ERROR and "\n" not in (r.remark or ""), (bad, r.remark)
    assert broker.store.group_config("x") is None

    assert call(broker, R.DELETE_SUBSCRIPTIONGROUP, {"groupName": "billing"}).code == ResponseCode.SUCCESS
    assert broker.store.group_config("billing") is None
    assert call(broker, R.DELETE_SUBSCRIPTIONGROUP, {"groupName": "billing"}).code == ResponseCode.SUCCESS
    table = fastjson.loads(call(broker, R.GET_ALL_SUBSCRIPTIONGROUP_CONFIG).body)["subscriptionGroupTable"]
    assert "billing" not in table


def test_codes_it_does_not_serve_answer_not_supported(broker: InProcessBroker) -> None:
    for code in (R.WIPE_WRITE_PERM_OF_BROKER, R.RESET_CONSUMER_OFFSET_IN_BROKER):
        r = call(broker, code)
        assert r.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED and "not supported" in (r.remark or "")


def test_connection_lists_and_runtime_info_shapes(broker: InProcessBroker) -> None:
    broker.create_topic("Cn", 1)
    heartbeat = {"clientID": "10.1.1.1@77", "producerDataSet": [{"groupName": "cpg"}], "consumerDataSet": [
        {"groupName": "ccg", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
         "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "unitMode": False,
         "subscriptionDataSet": [{"topic": "Cn", "subString": "TagA || TagB", "tagsSet": ["TagA", "TagB"],
                                  "codeSet": [], "subVersion": 5, "expressionType": "TAG"}]}]}  # fmt: skip

    async def connected() -> tuple[RemotingCommand, RemotingCommand, RemotingCommand]:
        conn = await connect(f"127.0.0.1:{broker.broker.port}")  # the registry holds clients while connected
        try:
            beat = await conn.request(RemotingCommand.request(R.HEART_BEAT, None, json.dumps(heartbeat).encode()))
            assert beat.code == ResponseCode.SUCCESS, beat.remark
            cons = await conn.request(RemotingCommand.request(R.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": "ccg"}))
            prod = await conn.request(RemotingCommand.request(R.GET_PRODUCER_CONNECTION_LIST, {"producerGroup": "cpg"}))
            info = await conn.request(RemotingCommand.request(R.GET_BROKER_RUNTIME_INFO))
            return cons, prod, info
        finally:
            conn.close()

    cons, prod, info = broker.lt.run(connected())
    body = fastjson.loads(cons.body)
    assert cons.code == ResponseCode.SUCCESS
    assert set(body) == {"connectionSet", "subscriptionTable", "consumeType", "messageModel", "consumeFromWhere"}
    (one,) = body["connectionSet"]
    assert one["clientId"] == "10.1.1.1@77" and one["language"] == "JAVA" and one["clientAddr"].startswith("127.0.0.1:")
    sub = body["subscriptionTable"]["Cn"]
    assert (sub["topic"], sub["subString"], sub["subVersion"]) == ("Cn", "TagA || TagB", 5)
    assert sorted(sub["tagsSet"]) == ["TagA", "TagB"]
    assert (body["consumeType"], body["messageModel"]) == ("CONSUME_PASSIVELY", "CLUSTERING")
    assert [c["clientId"] for c in fastjson.loads(prod.body)["connectionSet"]] == ["10.1.1.1@77"]
    table = fastjson.loads(info.body)["table"]
    assert table["brokerName"] == "broker-a" and int(table["topicCount"]) >= 1
    assert all(isinstance(v, str) for v in table.values())  # RocketMQ's KVTable: string values
