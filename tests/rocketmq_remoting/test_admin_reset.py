"""mqadmin's offset reset, broker config and single lookups at the protocol level (our codec as the client):
INVOKE_BROKER_TO_RESET_OFFSET, GET_BROKER_CONFIG / UPDATE_BROKER_CONFIG, GET_TOPIC_CONFIG,
GET_SUBSCRIPTIONGROUP_CONFIG, QUERY_TOPIC_CONSUME_BY_WHO and QUERY_CONSUME_TIME_SPAN, with RocketMQ's codes,
headers and body shapes, checked against the store's replicated state."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from dledger.rocketmq.remoting import fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.transport import RemotingConnection, connect
from tests.rocketmq_remoting.test_admin_codes import call, queue_table, send
from tests.rocketmq_remoting.test_broker_protocol import decode_bodies
from tests.rocketmq_remoting.util import InProcessBroker
from tests.support import wait_for

R = RequestCode


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    b = InProcessBroker(tmp_path_factory.mktemp("reset")).start()
    try:
        yield b
    finally:
        b.stop()


def now_between() -> int:
    """A millisecond strictly after what was stored before the call and before what is stored after it."""
    time.sleep(0.05)
    stamp = int(time.time() * 1000)
    time.sleep(0.05)
    return stamp


def reset(b: InProcessBroker, topic: str, group: str, stamp: int, force: bool = True, **extra: str) -> RemotingCommand:
    fields = {"topic": topic, "group": group, "timestamp": str(stamp), "isForce": str(force).lower(), **extra}
    return call(b, R.INVOKE_BROKER_TO_RESET_OFFSET, fields)


def offsets_of(body: bytes) -> dict[int, int]:
    return {queue: value for (_, _, queue), value in queue_table(body).items()}


def test_reset_to_a_timestamp_moves_the_groups_next_pull_and_tells_its_consumers(broker: InProcessBroker) -> None:
    broker.create_topic("Rs", 2)
    for body in (b"m0", b"m1"):
        assert send(broker, "Rs", body, 0).code == ResponseCode.SUCCESS
    stamp = now_between()
    for body, queue in ((b"m2", 0), (b"m3", 0), (b"n0", 1)):
        assert send(broker, "Rs", body, queue).code == ResponseCode.SUCCESS
    for queue, offset in ((0, 4), (1, 1)):
        commit = {"consumerGroup": "rg", "topic": "Rs", "queueId": str(queue), "commitOffset": str(offset)}
        assert call(broker, R.UPDATE_CONSUMER_OFFSET, commit).code == ResponseCode.SUCCESS

    notices: list[RemotingCommand] = []

    async def on_request(cmd: RemotingCommand, conn: RemotingConnection) -> None:
        if cmd.code == R.RESET_CONSUMER_CLIENT_OFFSET:  # (it is also told of its group's membership)
            notices.append(cmd)

    heartbeat = {"clientID": "10.2.2.2@9", "consumerDataSet": [
        {"groupName": "rg", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
         "subscriptionDataSet": [{"topic": "Rs", "subString": "*", "tagsSet": [], "subVersion": 1}]}]}  # fmt: skip

    async def online() -> RemotingConnection:
        conn = await connect(f"127.0.0.1:{broker.broker.port}", on_request)
        beat = await conn.request(RemotingCommand.request(R.HEART_BEAT, None, json.dumps(heartbeat).encode()))
        assert beat.code == ResponseCode.SUCCESS, beat.remark
        return conn

    consumer = broker.lt.run(online())
    try:
        r = reset(broker, "Rs", "rg", stamp)
        assert r.code == ResponseCode.SUCCESS, r.remark
        assert offsets_of(r.body) == {0: 2, 1: 0}
        assert [broker.store.committed_offset("rg", "Rs", q) for q in (0, 1)] == [2, 0]  # replicated commits
        query = call(broker, R.QUERY_CONSUMER_OFFSET, {"consumerGroup": "rg", "topic": "Rs", "queueId": "0"})
        assert query.ext_fields["offset"] == "2"
        fields = {"consumerGroup": "rg", "topic": "Rs", "queueId": "0", "queueOffset": query.ext_fields["offset"],
                  "maxMsgNums": "32", "sysFlag": "0", "suspendTimeoutMillis": "0"}  # fmt: skip
        pulled = call(broker, R.PULL_MESSAGE, fields)
        assert [(body, offset) for body, _, offset in decode_bodies(pulled.body)] == [(b"m2", 2), (b"m3", 3)]

        notice = wait_for(lambda: notices[0] if notices else None, what="the consumer's reset notice")
        assert notice.is_oneway
        assert (notice.ext_fields["group"], notice.ext_fields["topic"]) == ("rg", "Rs")
        assert offsets_of(notice.body) == {0: 2, 1: 0}
    finally:
        consumer.close()

    # not forced: an offset only moves back; forced to -1: the end of each queue
    assert offsets_of(reset(broker, "Rs", "rg", -1, force=False).body) == {0: 2, 1: 0}
    assert offsets_of(reset(broker, "Rs", "rg", -1).body) == {0: 4, 1: 1}
    # RocketMQ 5's one queue to one offset (clamped to what is stored)
    assert offsets_of(reset(broker, "Rs", "rg", -1, queueId="0", offset="1").body) == {0: 1}
    assert offsets_of(reset(broker, "Rs", "rg", -1, queueId="0", offset="99").body) == {0: 4}
    assert broker.store.committed_offset("rg", "Rs", 1) == 1

    assert reset(broker, "Nope", "rg", 0).code == ResponseCode.TOPIC_NOT_EXIST
    assert reset(broker, "Rs", "nobody", 0).code == ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST
    assert broker.store.committed_offset("nobody", "Rs", 0) == -1
    for bad in ({"timestamp": "soon"}, {"queueId": "9"}, {"group": ""}, {"group": "a\0b"}, {"topic": "x" * 5000}):
        fields = {"topic": "Rs", "group": "rg", "timestamp": "0", "isForce": "true", **bad}
        r = call(broker, R.INVOKE_BROKER_TO_RESET_OFFSET, fields)
        assert r.code == ResponseCode.SYSTEM_ERROR and "\n" not in (r.remark or ""), r.remark
    assert broker.store.committed_offset("rg", "Rs", 0) == 4


def settings(b: InProcessBroker) -> tuple[dict[str, str], dict[str, int]]:
    r = call(b, R.GET_BROKER_CONFIG)
    assert r.code == ResponseCode.SUCCESS
    lines = dict(line.split("=", 1) for line in r.body.decode().splitlines())
    return lines, json.loads(r.ext_fields["version"])


def test_broker_config_shows_settings_and_changes_only_runtime_keys(broker: InProcessBroker) -> None:
    shown, version = settings(broker)
    assert shown["brokerName"] == "broker-a" and shown["maxReconsumeTimes"] == "16"
    assert shown["messageDelayLevel"].split()[:3] == ["1s", "5s", "10s"] and "secretKey" not in shown
    assert set(version) == {"counter", "timestamp"}

    r = call(broker, R.UPDATE_BROKER_CONFIG, body=b"# tuned\nmaxReconsumeTimes=3\ntransactionTimeOut : 9000\n")
    assert r.code == ResponseCode.SUCCESS, r.remark
    assert (broker.broker.ctx.config.max_reconsume_times, broker.broker.ctx.config.tx_timeout_ms) == (3, 9000)
    after, newer = settings(broker)
    assert after["maxReconsumeTimes"] == "3" and newer["counter"] == version["counter"] + 1

    refused = call(broker, R.UPDATE_BROKER_CONFIG, body=b"maxReconsumeTimes=5\nbrokerName=other\n")
    assert refused.code == ResponseCode.NO_PERMISSION and "brokerName" in (refused.remark or "")
    for bad in (b"maxReconsumeTimes=lots", b"remotingLongPollMaxMs=-1", b"", b"\xff\xfe", b"no separator"):
        r = call(broker, R.UPDATE_BROKER_CONFIG, body=bad)
        assert r.code == ResponseCode.SYSTEM_ERROR and "\n" not in (r.remark or ""), (bad, r.remark)
    assert broker.broker.ctx.config.max_reconsume_times == 3 and broker.broker.ctx.config.broker_name == "broker-a"
    assert call(broker, R.UPDATE_BROKER_CONFIG, body=b"maxReconsumeTimes=16").code == ResponseCode.SUCCESS


def test_single_lookups_consumers_of_a_topic_and_time_spans(broker: InProcessBroker) -> None:
    broker.create_topic("Lk", 3)
    topic = call(broker, R.GET_TOPIC_CONFIG, {"topic": "Lk"})
    assert topic.code == ResponseCode.SUCCESS
    shown = fastjson.loads(topic.body)
    assert (shown["topicName"], shown["readQueueNums"], shown["writeQueueNums"], shown["perm"]) == ("Lk", 3, 3, 6)
    assert call(broker, R.GET_TOPIC_CONFIG, {"topic": "Nope"}).code == ResponseCode.TOPIC_NOT_EXIST

    created = call(broker, R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=b'{"groupName":"lkg","retryMaxTimes":2}')
    assert created.code == ResponseCode.SUCCESS
    group = fastjson.loads(call(broker, R.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": "lkg"}).body)
    assert (group["groupName"], group["retryMaxTimes"]) == ("lkg", 2)
    missing = call(broker, R.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": "nope"})
    assert missing.code == ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST
    malformed = [
        (R.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": "a\0b"}), (R.GET_TOPIC_CONFIG, {"topic": ""}),
        (R.QUERY_TOPIC_CONSUME_BY_WHO, {}), (R.QUERY_CONSUME_TIME_SPAN, {"topic": "Lk", "group": "x y"}),
    ]  # fmt: skip
    for code, fields in malformed:
        r = call(broker, code, fields)
        assert r.code == ResponseCode.SYSTEM_ERROR and "\n" not in (r.remark or ""), (code, r.remark)

    for body in (b"a", b"b", b"c"):
        assert send(broker, "Lk", body, 0).code == ResponseCode.SUCCESS
    commit = {"consumerGroup": "c1", "topic": "Lk", "queueId": "0", "commitOffset": "1"}
    assert call(broker, R.UPDATE_CONSUMER_OFFSET, commit).code == ResponseCode.SUCCESS
    who = call(broker, R.QUERY_TOPIC_CONSUME_BY_WHO, {"topic": "Lk"})
    assert fastjson.loads(who.body) == {"groupList": ["c1"]}
    assert fastjson.loads(call(broker, R.QUERY_TOPIC_CONSUME_BY_WHO, {"topic": "Nope"}).body) == {"groupList": []}

    span = call(broker, R.QUERY_CONSUME_TIME_SPAN, {"topic": "Lk", "group": "c1"})
    assert span.code == ResponseCode.SUCCESS
    rows = {s["messageQueue"]["queueId"]: s for s in fastjson.loads(span.body)["consumeTimeSpanSet"]}
    assert set(rows) == {0, 1, 2}
    q0 = rows[0]
    assert 0 < q0["minTimeStamp"] <= q0["maxTimeStamp"] and q0["consumeTimeStamp"] == q0["minTimeStamp"]
    assert q0["delayTime"] >= 0 and q0["messageQueue"] == {"brokerName": "broker-a", "queueId": 0, "topic": "Lk"}
    assert {k: v for k, v in rows[1].items() if k != "messageQueue"} == {
        "consumeTimeStamp": 0, "delayTime": 0, "maxTimeStamp": 0, "minTimeStamp": 0,
    }  # fmt: skip
    commit["commitOffset"] = "3"  # caught up: no delay, consumed up to the last message
    assert call(broker, R.UPDATE_CONSUMER_OFFSET, commit).code == ResponseCode.SUCCESS
    caught = fastjson.loads(call(broker, R.QUERY_CONSUME_TIME_SPAN, {"topic": "Lk", "group": "c1"}).body)
    row = caught["consumeTimeSpanSet"][0]
    assert row["delayTime"] == 0 and row["consumeTimeStamp"] == row["maxTimeStamp"] == q0["maxTimeStamp"]
    unknown = call(broker, R.QUERY_CONSUME_TIME_SPAN, {"topic": "Nope", "group": "c1"})
    assert unknown.code == ResponseCode.TOPIC_NOT_EXIST
