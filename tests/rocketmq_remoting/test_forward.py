"""A follower's writes relayed to the leader (`forward.py`), without processes: a `Forwarder` on a store that
is not master relays to an in-process master's remoting face. (test_cpp_group.py relays through a real
3-replica group.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dledger.node.config import ConfigError
from dledger.rocketmq.broker.clients import ClientRegistry
from dledger.rocketmq.broker.config import RemotingConfig
from dledger.rocketmq.broker.context import BrokerContext
from dledger.rocketmq.broker.forward import FORWARDED, Forwarder
from dledger.rocketmq.remoting import acl
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from tests.rocketmq_remoting.util import InProcessBroker

R = RequestCode


@dataclass
class FollowerStore:
    """What the forwarder asks of a store: is it master, and the leader's dLedger address."""

    leader: str = "10.0.0.1:40911"
    is_master: bool = False

    def leader_address(self) -> str:
        return self.leader


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    b = InProcessBroker(tmp_path_factory.mktemp("fwd"), {"accessKey": "ak", "secretKey": "sk"}).start()
    b.create_topic("Fw", 1)
    try:
        yield b
    finally:
        b.stop()


def forwarder(store: FollowerStore, leader_remoting: str) -> Forwarder:
    config = RemotingConfig(listen_port=10999, remoting_peers={store.leader: leader_remoting})
    return Forwarder(BrokerContext(store, config, ClientRegistry()))  # type: ignore[arg-type]


def signed(code: int, fields: dict[str, str], body: bytes = b"", *, oneway: bool = False) -> RemotingCommand:
    fields = {**fields, "AccessKey": "ak"}
    fields["Signature"] = acl.sign(fields, body, "sk")
    return RemotingCommand.request(code, fields, body, opaque=77, oneway=oneway)


def send_fields(body_id: str) -> dict[str, str]:
    return {"topic": "Fw", "queueId": "0", "properties": f"UNIQ_KEY\x01{body_id}\x02"}


def test_a_signed_send_is_relayed_and_answered_with_the_leaders_response(master: InProcessBroker) -> None:
    fwd = forwarder(FollowerStore(), f"127.0.0.1:{master.broker.port}")
    cmd = signed(R.SEND_MESSAGE, send_fields("FWD1"), b"relayed")
    target = fwd.target(cmd)
    assert target == f"127.0.0.1:{master.broker.port}"
    answer = master.lt.run(fwd.relay(cmd, target))
    assert answer.code == ResponseCode.SUCCESS, answer.remark
    assert answer.opaque == 77 and answer.is_response and answer.ext_fields["queueOffset"] == "0"
    stored = master.lt.run(master.store.query_by_id("FWD1"))
    assert stored is not None and stored.message.body == b"relayed"
    # oneway: relayed as a two-way request, so it is stored (the client gets no answer, as it asked)
    master.lt.run(fwd.relay(signed(R.SEND_MESSAGE, send_fields("FWD2"), b"one", oneway=True), target))
    assert master.lt.run(master.store.query_by_id("FWD2")) is not None
    master.lt.run(fwd.close())


def test_what_is_not_relayed(master: InProcessBroker) -> None:
    here = f"127.0.0.1:{master.broker.port}"
    send = signed(R.SEND_MESSAGE, send_fields("X"), b"x")
    assert forwarder(FollowerStore(is_master=True), here).target(send) is None  # the master writes itself
    assert forwarder(FollowerStore(), here).target(signed(R.PULL_MESSAGE, {})) is None  # reads are served here
    hop = RemotingCommand.request(R.SEND_MESSAGE, {**send.ext_fields, FORWARDED: "127.0.0.1:1"}, b"x")
    assert forwarder(FollowerStore(), here).target(hop) is None  # one hop at most
    assert forwarder(FollowerStore(leader=""), here).target(send) is None  # no leader known
    unknown = forwarder(FollowerStore(), here)
    unknown.ctx.config = RemotingConfig(remoting_peers={})
    assert unknown.target(send) is None  # the leader's remoting address is not known
    itself = forwarder(FollowerStore(), "127.0.0.1:10999")
    assert itself.target(send) is None  # the leader is this replica (still applying)


def test_a_leader_that_does_not_answer_is_one_line(master: InProcessBroker) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    fwd = forwarder(FollowerStore(), dead)
    answer = master.lt.run(fwd.relay(signed(R.SEND_MESSAGE, send_fields("D"), b"d"), dead))
    assert answer.code == ResponseCode.SERVICE_NOT_AVAILABLE
    assert dead in (answer.remark or "") and "\n" not in (answer.remark or "")


def test_the_relay_mark_does_not_break_a_signature() -> None:
    fields = {"topic": "T", "AccessKey": "ak"}
    fields["Signature"] = acl.sign(fields, b"body", "sk")
    assert acl.check({**fields, FORWARDED: "127.0.0.1:1"}, b"body", "ak", "sk") is None


def test_remoting_peers_are_given_or_derived() -> None:
    peers = "n0-10.0.0.1:40911;n1-10.0.0.2:40911"
    derived = RemotingConfig.from_properties({"dLegerPeers": peers, "listenPort": "10911"})
    assert dict(derived.remoting_peers) == {"10.0.0.1:40911": "10.0.0.1:10911", "10.0.0.2:40911": "10.0.0.2:10911"}
    shared = RemotingConfig.from_properties({"dLegerPeers": "n0-127.0.0.1:1;n1-127.0.0.1:2"})
    assert dict(shared.remoting_peers) == {}  # one host: the others' listenPorts are not known
    given = RemotingConfig.from_properties(
        {"dLegerPeers": "n0-127.0.0.1:1;n1-127.0.0.1:2", "remotingPeers": "n0-127.0.0.1:11;n1-127.0.0.1:12"}
    )
    assert dict(given.remoting_peers) == {"127.0.0.1:1": "127.0.0.1:11", "127.0.0.1:2": "127.0.0.1:12"}
    for bad in ("n0-127.0.0.1:11", "n0-127.0.0.1:11;n1-nohost"):
        with pytest.raises(ConfigError) as info:
            RemotingConfig.from_properties({"dLegerPeers": "n0-127.0.0.1:1;n1-127.0.0.1:2", "remotingPeers": bad})
        assert "remotingPeers" in str(info.value) and "\n" not in str(info.value)


def test_an_offset_reset_on_a_follower_is_committed_by_the_master(master: InProcessBroker) -> None:
    master.create_topic("FwR", 1)
    here = f"127.0.0.1:{master.broker.port}"
    fwd = forwarder(FollowerStore(), here)
    for i in range(2):
        fields = {"topic": "FwR", "queueId": "0", "properties": f"UNIQ_KEY\x01FWR{i}\x02"}
        assert master.lt.run(fwd.relay(signed(R.SEND_MESSAGE, fields, b"r"), here)).code == ResponseCode.SUCCESS
    master.lt.run(master.store.commit_offset("fg", "FwR", 0, 2))
    header = {"topic": "FwR", "group": "fg", "timestamp": "0", "isForce": "true"}
    reset = signed(R.INVOKE_BROKER_TO_RESET_OFFSET, header)
    assert fwd.target(reset) == here
    answer = master.lt.run(fwd.relay(reset, here))
    assert answer.code == ResponseCode.SUCCESS, answer.remark
    assert master.store.committed_offset("fg", "FwR", 0) == 0
    master.lt.run(fwd.close())
