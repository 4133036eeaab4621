"""The official C++ client through a `dledger namesrv` process and a 3-replica group of `dledger broker`
processes registering with it: produce and consume across a SIGKILL of the leader with nothing acknowledged
lost, and one store behind two protocols (C++ remoting client <-> official RocketMQ 5 gRPC client). Topics
are not created beforehand: the producer finds TBW102's route, the store auto-creates the topic and the
master registers it at once."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator

import pytest

from bench.namesrv_flip import NamesrvProcess, route_addrs
from dledger.cli.broker import LocalBrokerGroup
from dledger.cli.broker_groups import RegisteringGroup
from dledger.rocketmq.registration import AUTO_CREATE_TOPIC
from dledger.rocketmq.remoting.acl import RELAYED_BY
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.msgformat import parse_offset_msg_id
from dledger.rocketmq.remoting.transport import invoke
from tests.rocketmq_remoting.util import Worker, cpp_client, eventually
from tests.rocketmq_v5.util import (
    drain,
    leader_id,
    message,
    producer,
    send_eventually,
    simple_consumer,
)

pytestmark = pytest.mark.process  # C++ client worker processes (and broker processes)


class Cluster:
    """A `dledger namesrv` process and a 3-replica group of `dledger broker` processes registering with it."""

    def __init__(self, root: pathlib.Path) -> None:
        self.ns = NamesrvProcess(root / "namesrv")
        extra = {"consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"}
        self.group = RegisteringGroup.with_namesrv(root / "group", self.ns.address, group="broker")
        self.group.extra.update(extra)

    @property
    def namesrv(self) -> str:
        return self.ns.address

    def master(self) -> str | None:
        """The node whose address the NameServer routes as broker id 0."""
        addrs = route_addrs(self.ns.address, AUTO_CREATE_TOPIC, self.group.group)
        return self.group.node_of(addrs[0]) if 0 in addrs else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cpp_client()
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    c.ns.start()
    try:
        for _ in running_group_started(c.group):
            eventually("the leader registered as broker id 0", lambda: c.master() == leader_id(c.group), 90)
            yield c
    finally:
        c.ns.stop()


def running_group_started(group: LocalBrokerGroup) -> Iterator[LocalBrokerGroup]:
    group.start_all()
    try:
        with producer(group) as p:
            send_eventually(p, message("warmup", b"w"))
        yield group
    finally:
        group.stop_all()


def test_cpp_to_grpc_and_grpc_to_cpp(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    group = cluster.group
    prod = Worker(tmp_path, "p", "produce", "--namesrv", cluster.namesrv, "--topic", "X1", "--group", "xp",
                  "--count", "10", "--tags", "TagA")  # fmt: skip
    sent = prod.wait_done()
    assert all(r["status"] == "OK" for r in sent), sent
    with simple_consumer(group, "xg5", "X1", "TagA") as c:
        got = drain(c, {r["msg_id"] for r in sent})
    assert {m.body.decode() for m in got.values()} == {r["body"] for r in sent}
    assert all(m.tag == "TagA" and m.keys for m in got.values())

    with producer(group, ("X2",)) as p5:
        ids = {}
        for i in range(10):
            receipt = send_eventually(p5, message("X2", f"v5-{i}".encode(), tag="TagB", keys=f"k{i}"))
            ids[f"v5-{i}"] = receipt.message_id
    cons = Worker(tmp_path, "c", "consume", "--namesrv", cluster.namesrv, "--topic", "X2", "--group", "xg4")
    try:
        eventually("the 5.x client's messages", lambda: {m["body"] for m in cons.messages()} >= set(ids))
    finally:
        cons.kill()
    for m in cons.messages():
        assert (m["id"], m["tags"]) == (ids[m["body"]], "TagB")


def test_a_follower_relays_sends_to_the_leader_and_serves_pulls(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    group = cluster.group
    leader = leader_id(group)
    follower = next(n for n in group.peers if n != leader and group.alive(n))
    fields = {"topic": "XF", "queueId": "0", "properties": ""}
    relayed = asyncio.run(
        invoke(group.remoting[follower], RemotingCommand.request(RequestCode.SEND_MESSAGE, fields, b"via-follower"))
    )
    assert relayed.code == ResponseCode.SUCCESS, relayed.remark
    host, port, _ = parse_offset_msg_id(relayed.ext_fields["msgId"])  # stored by the leader
    assert f"{host}:{port}" == group.remoting[leader]
    hop = {**fields, RELAYED_BY: group.remoting[leader]}  # a relayed request is never relayed again
    refused = asyncio.run(
        invoke(group.remoting[follower], RemotingCommand.request(RequestCode.SEND_MESSAGE, hop, b"f"))
    )
    assert refused.code == ResponseCode.SERVICE_NOT_AVAILABLE and "NOT_LEADER" in (refused.remark or "")
    sent = asyncio.run(
        invoke(group.remoting[leader], RemotingCommand.request(RequestCode.SEND_MESSAGE, fields, b"via-leader"))
    )
    assert sent.code == ResponseCode.SUCCESS, sent.remark
    pull = {"consumerGroup": "fq", "topic": "XF", "queueId": "0", "queueOffset": "0", "maxMsgNums": "32",
            "sysFlag": "0"}  # fmt: skip

    def served_by_follower() -> bool:
        r = asyncio.run(invoke(group.remoting[follower], RemotingCommand.request(RequestCode.PULL_MESSAGE, pull)))
        return r.code == ResponseCode.SUCCESS and b"via-follower" in r.body and b"via-leader" in r.body

    eventually("the follower serves the committed messages", served_by_follower, timeout=60)


def test_nothing_acknowledged_is_lost_across_a_leader_kill(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    group = cluster.group
    cons = Worker(tmp_path, "c", "consume", "--namesrv", cluster.namesrv, "--topic", "F1", "--group", "fg")
    prod = Worker(tmp_path, "p", "produce", "--namesrv", cluster.namesrv, "--topic", "F1", "--group", "fp",
                  "--count", "-1", "--interval", "0.02", "--timeout-ms", "3000")  # fmt: skip
    try:
        cons.wait_started()
        eventually("consumption under way", lambda: len(cons.messages()) >= 50, timeout=90)
        old = leader_id(group)
        acked_before = sum(r.get("status") == "OK" for r in prod.records())
        group.kill(old)
        killed_at = time.monotonic()
        eventually("a new master in the route", lambda: cluster.master() not in (None, old), timeout=60)
        eventually(
            "sends acknowledged by the new leader",
            lambda: sum(r.get("status") == "OK" for r in prod.records()) >= acked_before + 50,
            timeout=120,
        )
        resumed_after = time.monotonic() - killed_at
        prod.kill()
        acked = {r["body"] for r in prod.records() if r.get("status") == "OK"}
        eventually(
            "every acknowledged message consumed", lambda: acked <= {m["body"] for m in cons.messages()}, timeout=120
        )
    finally:
        prod.kill()
        cons.kill()
        group.start(old)
    print(f"sends resumed {resumed_after:.1f} s after the leader was killed")
