"""The broker's remoting face at the protocol level (our codec as the client): codes, headers, bodies and
statuses as RocketMQ's broker answers them, and bad input answered with one line, never a crash."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dledger.rocketmq.broker.face import HANDLERS
from dledger.rocketmq.remoting import acl, fastjson
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import (
    COMPRESSED_FLAG,
    BatchItem,
    encode_batch,
    encode_properties,
    parse_offset_msg_id,
)
from dledger.rocketmq.remoting.transport import connect, invoke
from tests.rocketmq_remoting.util import InProcessBroker

R = RequestCode


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    props = {"messageDelayLevel": " ".join(["1s"] * 18), "transactionTimeOut": "300", "transactionCheckInterval": "500"}
    b = InProcessBroker(tmp_path_factory.mktemp("proto"), props).start()
    b.create_topic("P", 2)
    try:
        yield b
    finally:
        b.stop()


def call(b: InProcessBroker, code: int, fields: dict[str, str] | None = None, body: bytes = b"") -> RemotingCommand:
    address = f"127.0.0.1:{b.broker.port}"
    return b.lt.run(invoke(address, RemotingCommand.request(code, fields, body), timeout=30.0))


def send(b: InProcessBroker, topic: str, body: bytes, queue: int = 0, **props: str) -> RemotingCommand:
    fields = {"b": topic, "e": str(queue), "f": "0", "g": str(int(time.time() * 1000)), "h": "0",
              "i": encode_properties(props), "a": "pg"}  # fmt: skip
    return call(b, R.SEND_MESSAGE_V2, fields, body)


def pull(b: InProcessBroker, topic: str, queue: int, offset: int, **extra: str) -> RemotingCommand:
    fields = {"consumerGroup": "g", "topic": topic, "queueId": str(queue), "queueOffset": str(offset),
              "maxMsgNums": "32", "sysFlag": "0", "suspendTimeoutMillis": "0", **extra}  # fmt: skip
    return call(b, R.PULL_MESSAGE, fields)


def decode_bodies(raw: bytes) -> list[tuple[bytes, dict[str, str], int]]:
    """(body, properties, queue offset) of each stored-format record (enough of the layout for these checks)."""
    out = []
    p = 0
    while p < len(raw):
        size = int.from_bytes(raw[p : p + 4], "big")
        rec = raw[p : p + size]
        queue_offset = int.from_bytes(rec[20:28], "big")
        q = 84  # BODY_SIZE_POSITION with IPv4 hosts
        blen = int.from_bytes(rec[q : q + 4], "big")
        body = rec[q + 4 : q + 4 + blen]
        t = q + 4 + blen
        tlen = rec[t]
        plen = int.from_bytes(rec[t + 1 + tlen : t + 3 + tlen], "big")
        text = rec[t + 3 + tlen : t + 3 + tlen + plen].decode()
        props = dict(item.split("\x01") for item in text.split("\x02") if item)
        out.append((body, props, queue_offset))
        p += size
    return out


def test_unsupported_codes_answer_with_a_remark(broker: InProcessBroker) -> None:
    for code in (R.POP_MESSAGE, 9999):
        r = call(broker, code)
        assert r.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED and r.remark and "not supported" in r.remark


def test_missing_or_malformed_header_fields_answer_one_line(broker: InProcessBroker) -> None:
    r = call(broker, R.PULL_MESSAGE, {"topic": "P"})
    assert r.code == ResponseCode.SYSTEM_ERROR and "consumerGroup" in (r.remark or "")
    r = pull(broker, "P", 0, 0, queueOffset="zero")
    assert r.code == ResponseCode.SYSTEM_ERROR and "queueOffset" in (r.remark or "") and "\n" not in (r.remark or "")
    r = call(broker, R.HEART_BEAT, None, b"{not json")
    assert r.code == ResponseCode.SYSTEM_ERROR and "\n" not in (r.remark or "")
    r = call(broker, R.SEND_BATCH_MESSAGE, {"topic": "P", "queueId": "0"}, b"\0\0\0\x05garbage")
    assert r.code == ResponseCode.MESSAGE_ILLEGAL


def test_send_then_pull_round_trip_with_ids_and_offsets(broker: InProcessBroker) -> None:
    r = send(broker, "P", b"hello", 1, TAGS="TagA", KEYS="k1 k2", UNIQ_KEY="ABC123", color="red")
    assert r.code == ResponseCode.SUCCESS, r.remark
    host, port, phys = parse_offset_msg_id(r.ext_fields["msgId"])
    assert (host, port) == ("127.0.0.1", broker.broker.port) and phys > 0
    offset = int(r.ext_fields["queueOffset"])
    got = pull(broker, "P", 1, offset)
    assert got.code == ResponseCode.SUCCESS
    assert int(got.ext_fields["nextBeginOffset"]) == offset + 1 and "maxOffset" in got.ext_fields
    (body, props, qo), *_ = decode_bodies(got.body)
    assert (body, qo) == (b"hello", offset)
    assert props == {"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "ABC123", "color": "red"}


def test_a_send_that_auto_creates_its_topic_announces_it_once(broker: InProcessBroker) -> None:
    announced: list[str] = []

    def listener() -> None:
        announced.append("changed")

    broker.broker.on_topics_changed(listener)
    try:
        assert send(broker, "P", b"existing topic").code == ResponseCode.SUCCESS
        assert announced == []
        for n in range(3):
            assert send(broker, "AutoCreated", f"m{n}".encode()).code == ResponseCode.SUCCESS
        assert announced == ["changed"]  # the first send created it; the others found it
        assert broker.store.topic("AutoCreated") is not None
        assert call(broker, R.DELETE_TOPIC_IN_BROKER, {"topic": "AutoCreated"}).code == ResponseCode.SUCCESS
        assert send(broker, "AutoCreated", b"again").code == ResponseCode.SUCCESS
        assert announced == ["changed"] * 3  # the deletion, then the send that created it again
    finally:
        broker.broker.ctx.on_topics_changed.remove(listener)


def test_compressed_and_batched_sends(broker: InProcessBroker) -> None:
    raw = b"z" * 3000
    fields = {"topic": "P", "queueId": "0", "sysFlag": str(COMPRESSED_FLAG), "properties": ""}
    r = call(broker, R.SEND_MESSAGE, fields, zlib.compress(raw))
    assert r.code == ResponseCode.SUCCESS, r.remark
    start = int(r.ext_fields["queueOffset"])
    items = [BatchItem(f"b{i}".encode(), 0, {"TAGS": "T", "UNIQ_KEY": f"U{i}"}) for i in range(3)]
    r = call(broker, R.SEND_BATCH_MESSAGE, {"topic": "P", "queueId": "0"}, encode_batch(items))
    assert r.code == ResponseCode.SUCCESS and len(r.ext_fields["msgId"].split(",")) == 3
    bodies = [b for b, _, _ in decode_bodies(pull(broker, "P", 0, start).body)]
    assert bodies[:4] == [raw, b"b0", b"b1", b"b2"]


def test_pull_statuses(broker: InProcessBroker) -> None:
    assert send(broker, "P", b"red one", 1, color="red").code == ResponseCode.SUCCESS
    assert send(broker, "P", b"blue one", 1, color="blue").code == ResponseCode.SUCCESS
    end = int(call(broker, R.GET_MAX_OFFSET, {"topic": "P", "queueId": "0"}).ext_fields["offset"])
    assert pull(broker, "P", 0, end).code == ResponseCode.PULL_NOT_FOUND
    moved = pull(broker, "P", 0, end + 100)
    assert moved.code == ResponseCode.PULL_OFFSET_MOVED and moved.ext_fields["nextBeginOffset"] == "0"
    assert pull(broker, "nope", 0, 0).code == ResponseCode.TOPIC_NOT_EXIST
    sql = pull(broker, "P", 1, 0, sysFlag="4", subscription="color = 'red'", expressionType="SQL92")
    assert sql.code == ResponseCode.SUCCESS and all(p.get("color") == "red" for _, p, _ in decode_bodies(sql.body))
    bad = pull(broker, "P", 1, 0, sysFlag="4", subscription="color = ", expressionType="SQL92")
    assert bad.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED
    none = pull(broker, "P", 1, 0, sysFlag="4", subscription="NoSuchTag")
    assert none.code == ResponseCode.PULL_RETRY_IMMEDIATELY


def test_a_suspended_pull_answers_when_a_message_arrives(broker: InProcessBroker) -> None:
    end = int(call(broker, R.GET_MAX_OFFSET, {"topic": "P", "queueId": "1"}).ext_fields["offset"])

    async def scenario() -> tuple[RemotingCommand, float]:
        conn = await connect(f"127.0.0.1:{broker.broker.port}")
        try:
            fields = {"consumerGroup": "g", "topic": "P", "queueId": "1", "queueOffset": str(end), "maxMsgNums": "8",
                      "sysFlag": "2", "suspendTimeoutMillis": "20000"}  # fmt: skip
            t0 = time.monotonic()
            held = asyncio.ensure_future(conn.request(RemotingCommand.request(R.PULL_MESSAGE, fields), 40.0))
            await asyncio.sleep(0.3)
            assert not held.done()  # suspended: nothing at the offset yet
            sent = {"topic": "P", "queueId": "1", "properties": ""}
            await conn.request(RemotingCommand.request(R.SEND_MESSAGE, sent, b"wake"), 30.0)
            return await held, time.monotonic() - t0
        finally:
            conn.close()

    answer, waited = broker.lt.run(scenario())
    assert answer.code == ResponseCode.SUCCESS and waited < 15  # well before the 20 s suspension ran out
    assert [b for b, _, _ in decode_bodies(answer.body)] == [b"wake"]


def test_consumer_offsets_queries_and_heartbeats(broker: InProcessBroker) -> None:
    for body in (b"o1", b"o2", b"o3"):
        assert send(broker, "P", body, 0).code == ResponseCode.SUCCESS
    q = {"consumerGroup": "og", "topic": "P", "queueId": "0"}
    assert call(broker, R.QUERY_CONSUMER_OFFSET, q).ext_fields == {"offset": "0"}  # the queue starts at 0
    assert call(broker, R.UPDATE_CONSUMER_OFFSET, {**q, "commitOffset": "2"}).code == ResponseCode.SUCCESS
    assert call(broker, R.QUERY_CONSUMER_OFFSET, q).ext_fields == {"offset": "2"}
    assert call(broker, R.GET_MIN_OFFSET, {"topic": "P", "queueId": "0"}).ext_fields == {"offset": "0"}
    ts = call(broker, R.GET_EARLIEST_MSG_STORETIME, {"topic": "P", "queueId": "0"})
    assert ts.code == ResponseCode.SUCCESS and int(ts.ext_fields["timestamp"]) > 0
    found = call(broker, R.SEARCH_OFFSET_BY_TIMESTAMP, {"topic": "P", "queueId": "0", "timestamp": "0"})
    assert found.ext_fields == {"offset": "0"}
    assert call(broker, R.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "hb"}).code == ResponseCode.SYSTEM_ERROR
    hb = {"clientID": "c1", "consumerDataSet": [{"groupName": "hb", "messageModel": "CLUSTERING",
          "subscriptionDataSet": [{"topic": "P", "subString": "TagA", "expressionType": "TAG"}]}]}  # fmt: skip

    async def member_then_gone() -> tuple[RemotingCommand, RemotingCommand]:
        conn = await connect(f"127.0.0.1:{broker.broker.port}")
        beat = await conn.request(RemotingCommand.request(R.HEART_BEAT, None, fastjson.dumps(hb)), 30.0)
        assert beat.code == ResponseCode.SUCCESS
        listed = await conn.request(
            RemotingCommand.request(R.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "hb"}), 30.0
        )
        conn.close()
        await conn.wait_closed()
        await asyncio.sleep(0.1)
        return listed, await invoke(
            f"127.0.0.1:{broker.broker.port}",
            RemotingCommand.request(R.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "hb"}),
        )

    listed, after = broker.lt.run(member_then_gone())
    assert fastjson.loads(listed.body) == {"consumerIdList": ["c1"]}
    assert after.code == ResponseCode.SYSTEM_ERROR  # its connection closed: the client is gone
    deadline = time.monotonic() + 30
    while broker.store.topic("%RETRY%hb") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    retry = broker.store.topic("%RETRY%hb")
    assert retry is not None and retry.queue_count == 1


def test_queue_locks_are_exclusive(broker: InProcessBroker) -> None:
    mq = [{"topic": "P", "brokerName": "broker-a", "queueId": 0}]
    a = call(broker, R.LOCK_BATCH_MQ, None, fastjson.dumps({"consumerGroup": "lg", "clientId": "A", "mqSet": mq}))
    b = call(broker, R.LOCK_BATCH_MQ, None, fastjson.dumps({"consumerGroup": "lg", "clientId": "B", "mqSet": mq}))
    assert fastjson.loads(a.body)["lockOKMQSet"] == mq and fastjson.loads(b.body)["lockOKMQSet"] == []
    call(broker, R.UNLOCK_BATCH_MQ, None, fastjson.dumps({"consumerGroup": "lg", "clientId": "A", "mqSet": mq}))
    b = call(broker, R.LOCK_BATCH_MQ, None, fastjson.dumps({"consumerGroup": "lg", "clientId": "B", "mqSet": mq}))
    assert fastjson.loads(b.body)["lockOKMQSet"] == mq


def test_send_back_goes_to_retry_then_dead_letter(broker: InProcessBroker) -> None:
    assert send(broker, "P", b"bad", 0, UNIQ_KEY="SB1").code == ResponseCode.SUCCESS
    back = {"group": "sg", "originMsgId": "SB1", "originTopic": "P", "delayLevel": "0", "offset": "0",
            "maxReconsumeTimes": "1"}  # fmt: skip
    assert call(broker, R.CONSUMER_SEND_MSG_BACK, back).code == ResponseCode.SUCCESS
    assert broker.store.topic("%RETRY%sg") is not None
    deadline = time.monotonic() + 30
    while (retry := pull(broker, "%RETRY%sg", 0, 0)).code != ResponseCode.SUCCESS:  # delayed by level 3: 1 s
        assert time.monotonic() < deadline, retry.remark
        time.sleep(0.05)
    (body, props, _), *_ = decode_bodies(retry.body)
    assert body == b"bad" and props["RETRY_TOPIC"] == "P"
    assert call(broker, R.CONSUMER_SEND_MSG_BACK, back).code == ResponseCode.SUCCESS  # reconsumed once: DLQ
    dlq = pull(broker, "%DLQ%sg", 0, 0)
    assert dlq.code == ResponseCode.SUCCESS
    (body, props, _), *_ = decode_bodies(dlq.body)
    assert body == b"bad" and props["RETRY_TOPIC"] == "P" and props["UNIQ_KEY"] == "SB1"
    missing = call(broker, R.CONSUMER_SEND_MSG_BACK, {**back, "originMsgId": "nope"})
    assert missing.code == ResponseCode.SYSTEM_ERROR


def test_admin_topics_lookups_and_connections(broker: InProcessBroker) -> None:
    r = call(broker, R.UPDATE_AND_CREATE_TOPIC, {"topic": "Adm", "readQueueNums": "3", "writeQueueNums": "3"})
    assert r.code == ResponseCode.SUCCESS and broker.store.topic("Adm").queue_count == 3
    table = fastjson.loads(call(broker, R.GET_ALL_TOPIC_CONFIG).body)["topicConfigTable"]
    assert table["Adm"]["readQueueNums"] == 3 and "P" in table
    sent = send(broker, "Adm", b"findme", 2, KEYS="order-7", UNIQ_KEY="ADM1")
    by_key = call(broker, R.QUERY_MESSAGE, {"topic": "Adm", "key": "order-7", "maxNum": "8",
                                              "beginTimestamp": "0", "endTimestamp": str(2**62)})  # fmt: skip
    assert by_key.code == ResponseCode.SUCCESS and [b for b, _, _ in decode_bodies(by_key.body)] == [b"findme"]
    by_uniq = call(broker, R.QUERY_MESSAGE, {"topic": "Adm", "key": "ADM1", "maxNum": "8"})
    assert [b for b, _, _ in decode_bodies(by_uniq.body)] == [b"findme"]
    _, _, phys = parse_offset_msg_id(sent.ext_fields["msgId"])
    viewed = call(broker, R.VIEW_MESSAGE_BY_ID, {"offset": str(phys)})
    assert viewed.code == ResponseCode.SUCCESS
    assert [(b, q) for b, _, q in decode_bodies(viewed.body)] == [(b"findme", int(sent.ext_fields["queueOffset"]))]
    assert call(broker, R.VIEW_MESSAGE_BY_ID, {"offset": str(phys + 3)}).code == ResponseCode.SYSTEM_ERROR
    assert call(broker, R.VIEW_MESSAGE_BY_ID, {"offset": str(999 << 32)}).code == ResponseCode.SYSTEM_ERROR
    info = fastjson.loads(call(broker, R.GET_BROKER_RUNTIME_INFO).body)["table"]
    assert info["brokerRole"] == "SYNC_MASTER"
    none = call(broker, R.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": "nobody"})
    assert none.code == ResponseCode.CONSUMER_NOT_ONLINE


def test_half_messages_end_transaction_and_the_check_back(broker: InProcessBroker) -> None:
    checks: list[RemotingCommand] = []

    async def producer_side(cmd: RemotingCommand, conn: object) -> None:
        checks.append(cmd)
        return None

    async def scenario() -> tuple[RemotingCommand, RemotingCommand]:
        conn = await connect(f"127.0.0.1:{broker.broker.port}", producer_side)
        beat = {"clientID": "tx-client", "producerDataSet": [{"groupName": "txg"}]}
        await conn.request(RemotingCommand.request(R.HEART_BEAT, None, fastjson.dumps(beat)), 30.0)
        fields = {"topic": "TX", "queueId": "0", "properties": encode_properties({"TRAN_MSG": "true", "PGROUP": "txg",
                  "UNIQ_KEY": "TX1"}), "producerGroup": "txg"}  # fmt: skip
        half = await conn.request(RemotingCommand.request(R.SEND_MESSAGE, fields, b"half"), 30.0)
        fields2 = {**fields, "properties": encode_properties({"TRAN_MSG": "true", "PGROUP": "txg", "UNIQ_KEY": "TX2"})}
        rolled = await conn.request(RemotingCommand.request(R.SEND_MESSAGE, fields2, b"rolled back"), 30.0)
        deadline = time.monotonic() + 30
        while not any(c.ext_fields.get("transactionId") == "TX1" for c in checks):  # unresolved for 300 ms
            assert time.monotonic() < deadline, "no CHECK_TRANSACTION_STATE"
            await asyncio.sleep(0.05)
        conn.close()
        return half, rolled

    half, rolled = broker.lt.run(scenario())
    assert half.code == rolled.code == ResponseCode.SUCCESS and half.ext_fields["transactionId"] == "TX1"
    assert pull(broker, "TX", 0, 0).code != ResponseCode.SUCCESS  # invisible while prepared
    check = next(c for c in checks if c.ext_fields.get("transactionId") == "TX1")
    assert check.code == R.CHECK_TRANSACTION_STATE and [b for b, _, _ in decode_bodies(check.body)] == [b"half"]
    end = {"producerGroup": "txg", "commitOrRollback": "8", "transactionId": "TX1", "msgId": "TX1",
           "tranStateTableOffset": "0", "commitLogOffset": "0", "fromTransactionCheck": "true"}  # fmt: skip
    assert call(broker, R.END_TRANSACTION, end).code == ResponseCode.SUCCESS
    assert call(broker, R.END_TRANSACTION, {**end, "transactionId": "TX2", "msgId": "TX2",
                                            "commitOrRollback": "12"}).code == ResponseCode.SUCCESS  # fmt: skip
    got = pull(broker, "TX", 0, 0)
    assert got.code == ResponseCode.SUCCESS and [b for b, _, _ in decode_bodies(got.body)] == [b"half"]
    assert call(broker, R.END_TRANSACTION, end).code == ResponseCode.SYSTEM_ERROR  # ended already


def test_acl_signatures(tmp_path_factory: pytest.TempPathFactory) -> None:
    b = InProcessBroker(tmp_path_factory.mktemp("acl"), {"accessKey": "ak", "secretKey": "sk"}).start()
    try:
        fields = {"topic": "P", "queueId": "0"}
        unsigned = call(b, R.GET_MAX_OFFSET, fields)
        assert unsigned.code == ResponseCode.SYSTEM_ERROR and "not signed" in (unsigned.remark or "")
        signed = {**fields, "AccessKey": "ak"}
        signed["Signature"] = acl.sign(signed, b"", "sk")
        assert "AclException" not in (call(b, R.GET_MAX_OFFSET, signed).remark or "")
        forged = {**signed, "queueId": "1"}  # a field changed after signing
        assert call(b, R.GET_MAX_OFFSET, forged).remark == "AclException: the signature does not match (accessKey=ak)"
        other = {**fields, "AccessKey": "someone"}
        other["Signature"] = acl.sign(other, b"", "sk")
        assert call(b, R.GET_MAX_OFFSET, other).remark == "AclException: no ACL account for accessKey=someone"
    finally:
        b.stop()


FIELD_NAMES = [
    "topic",
    "queueId",
    "queueOffset",
    "consumerGroup",
    "group",
    "sysFlag",
    "properties",
    "b",
    "e",
    "f",
    "i",
    "m",
    "offset",
    "originMsgId",
    "delayLevel",
    "maxMsgNums",
    "subscription",
    "expressionType",
    "commitOffset",
    "timestamp",
    "key",
    "maxNum",
    "readQueueNums",
    "clientID",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    code=st.sampled_from(sorted(HANDLERS)),
    fields=st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        st.one_of(
            st.text(max_size=12), st.integers(-(2**70), 2**70).map(str), st.sampled_from(["P", "0", "-1", "true"])
        ),
        max_size=8,
    ),
    body=st.one_of(st.binary(max_size=64), st.sampled_from([b"{}", b"[]", b'{"clientID": 5}', b'{"mqSet": 1}'])),
)
def test_random_requests_get_one_line_answers(
    broker: InProcessBroker, code: int, fields: dict[str, str], body: bytes
) -> None:
    if code == R.PULL_MESSAGE:
        fields = {**fields, "sysFlag": "0"}  # no long poll: an answer at once
    r = call(broker, code, fields, body)
    assert r.is_response and "\n" not in (r.remark or "")
    assert (
        r.code != ResponseCode.SYSTEM_ERROR or "Error:" not in (r.remark or "") or "HeaderError" not in (r.remark or "")
    )
