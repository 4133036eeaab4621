"""Per-account ACL of the remoting face (`aclFile`, RocketMQ's plain ACL) at the protocol level: signatures,
admin-only requests, per-topic and per-group permissions, answered with RocketMQ's SYSTEM_ERROR and one line;
and the accounts file refused with one line when malformed."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator

import pytest

from dledger.node.config import ConfigError
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.remoting import acl
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.transport import invoke
from tests.rocketmq_remoting.util import InProcessBroker

R = RequestCode
ACCOUNTS = {
    "accounts": [
        {"accessKey": "app", "secretKey": "app-secret", "defaultTopicPerm": "DENY", "defaultGroupPerm": "DENY",
         "topicPerms": ["orders=PUB|SUB", "audit=SUB"], "groupPerms": ["billing=SUB"]},
        {"accessKey": "root", "secretKey": "root-secret", "admin": True},
    ]
}  # fmt: skip
SECRETS = {"app": "app-secret", "root": "root-secret"}


def write_accounts(path: pathlib.Path, data: object) -> pathlib.Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    root = tmp_path_factory.mktemp("access")
    b = InProcessBroker(root, {"aclFile": str(write_accounts(root / "plain_acl.json", ACCOUNTS))}).start()
    for topic in ("orders", "audit", "secret"):
        b.create_topic(topic, 1)
    try:
        yield b
    finally:
        b.stop()


def call(b: InProcessBroker, code: int, fields: dict[str, str], body: bytes = b"", *, as_: str = "app",
         secret: str | None = None) -> RemotingCommand:  # fmt: skip
    fields = {**fields, "AccessKey": as_}
    fields["Signature"] = acl.sign(fields, body, secret if secret is not None else SECRETS.get(as_, "x"))
    address = f"127.0.0.1:{b.broker.port}"
    return b.lt.run(invoke(address, RemotingCommand.request(code, fields, body), timeout=30.0))


def send(b: InProcessBroker, topic: str, **kw: str) -> RemotingCommand:
    fields = {"b": topic, "e": "0", "f": "0", "g": str(int(time.time() * 1000)), "h": "0", "i": "", "a": "pg"}
    return call(b, R.SEND_MESSAGE_V2, fields, b"body", **kw)


def refused(r: RemotingCommand, said: str) -> bool:
    remark = r.remark or ""
    return r.code == ResponseCode.SYSTEM_ERROR and remark.startswith("AclException: ") and said in remark


def pull(b: InProcessBroker, topic: str, group: str) -> RemotingCommand:
    fields = {"consumerGroup": group, "topic": topic, "queueId": "0", "queueOffset": "0", "maxMsgNums": "4",
              "sysFlag": "0"}  # fmt: skip
    return call(b, R.PULL_MESSAGE, fields)


def test_signatures_are_checked_per_account(broker: InProcessBroker) -> None:
    assert send(broker, "orders").code == ResponseCode.SUCCESS
    assert refused(send(broker, "orders", secret="root-secret"), "signature does not match")
    assert refused(send(broker, "orders", as_="nobody"), "no ACL account for accessKey=nobody")
    address = f"127.0.0.1:{broker.broker.port}"
    unsigned = broker.lt.run(invoke(address, RemotingCommand.request(R.GET_MAX_OFFSET, {"topic": "orders"})))
    assert refused(unsigned, "not signed")


def test_topic_and_group_permissions(broker: InProcessBroker) -> None:
    assert refused(send(broker, "audit"), "no PUB permission on topic audit for accessKey=app")  # SUB only
    assert refused(send(broker, "secret"), "no PUB permission on topic secret")  # the default: DENY
    assert send(broker, "secret", as_="root").code == ResponseCode.SUCCESS  # an admin may do everything
    assert pull(broker, "orders", "billing").code == ResponseCode.SUCCESS
    assert refused(pull(broker, "orders", "other"), "no SUB permission on group other")
    assert refused(pull(broker, "secret", "billing"), "no SUB permission on topic secret")
    commit = {"consumerGroup": "other", "topic": "orders", "queueId": "0", "commitOffset": "1"}
    assert refused(call(broker, R.UPDATE_CONSUMER_OFFSET, commit), "group other")
    heartbeat = {"clientID": "c1", "producerDataSet": [], "consumerDataSet": [
        {"groupName": "billing", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
         "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "unitMode": False,
         "subscriptionDataSet": [{"topic": "secret", "subString": "*", "tagsSet": [], "codeSet": [],
                                  "subVersion": 1, "expressionType": "TAG"}]}]}  # fmt: skip
    assert refused(call(broker, R.HEART_BEAT, {}, json.dumps(heartbeat).encode()), "topic secret")
    heartbeat["consumerDataSet"][0]["subscriptionDataSet"][0]["topic"] = "orders"  # type: ignore[index]
    assert call(broker, R.HEART_BEAT, {}, json.dumps(heartbeat).encode()).code == ResponseCode.SUCCESS


def test_administration_needs_an_admin_account(broker: InProcessBroker) -> None:
    create = {"topic": "made", "readQueueNums": "1", "writeQueueNums": "1"}
    assert refused(call(broker, R.UPDATE_AND_CREATE_TOPIC, create), "needs an admin account")
    assert broker.store.topic("made") is None
    assert call(broker, R.UPDATE_AND_CREATE_TOPIC, create, as_="root").code == ResponseCode.SUCCESS
    assert refused(call(broker, R.DELETE_TOPIC_IN_BROKER, {"topic": "made"}), "needs an admin account")
    assert call(broker, R.DELETE_TOPIC_IN_BROKER, {"topic": "made"}, as_="root").code == ResponseCode.SUCCESS
    reset = {"topic": "orders", "group": "app", "timestamp": "-1", "isForce": "true"}
    assert refused(call(broker, R.INVOKE_BROKER_TO_RESET_OFFSET, reset), "needs an admin account")
    assert refused(call(broker, R.UPDATE_BROKER_CONFIG, {}, b"maxReconsumeTimes=2"), "needs an admin account")
    assert broker.broker.ctx.config.max_reconsume_times == 16


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ("not json", "aclFile"),
        ({"users": []}, "'accounts' list"),
        ({"accounts": [{"accessKey": "a"}]}, "secretKey is missing"),
        ({"accounts": [{"accessKey": "a", "secretKey": "short"}]}, "shorter than 6"),
        ({"accounts": [{"accessKey": "a", "secretKey": "123456", "topicPerms": ["t=ALL"]}]}, "is not DENY"),
        ({"accounts": [{"accessKey": "a", "secretKey": "123456", "topicPerms": ["noperm"]}]}, "NAME=PERM"),
        ({"accounts": [{"accessKey": "a", "secretKey": "123456", "admin": "yes"}]}, "admin is not"),
        ({"accounts": [{"accessKey": "a", "secretKey": "123456"}] * 2}, "appears twice"),
    ],
)
def test_a_bad_accounts_file_is_one_line(tmp_path: pathlib.Path, data: object, said: str) -> None:
    path = tmp_path / "acl.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(ConfigError) as info:
        RemotingConfig.from_properties({"aclFile": str(path)})
    assert said in str(info.value) and "aclFile" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        RemotingConfig.from_properties({"aclFile": str(tmp_path / "missing.json")})
