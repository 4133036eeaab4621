"""The official C++ client against a 3-replica group of real `dledger broker` processes through a route
server that names the current leader as broker id 0 (what the NameServer does with the registrations):
produce and consume across a SIGKILL of the leader with nothing acknowledged lost, and one store behind two
protocols (C++ remoting client <-> official RocketMQ 5 gRPC client)."""

from __future__ import annotations

import pathlib
import threading
import time
from collections.abc import Iterator

import pytest

from dledger.cli.broker import LocalBrokerGroup
from tests.broker_endpoint.util import (
    drain,
    leader_id,
    message,
    producer,
    running_group,
    send_eventually,
    simple_consumer,
)
from tests.rocketmq_remoting.util import LoopThread, RouteServer, Worker, cpp_client, eventually


class LeaderRoute:
    """A route server whose broker id 0 follows the group's leader (polled every 0.2 s)."""

    def __init__(self, group: LocalBrokerGroup) -> None:
        self.group = group
        self.leader = leader_id(group)
        self.lt = LoopThread()
        self.routes = RouteServer(group.group, lambda: group.remoting[self.leader], self.queues_of)
        self.lt.run(self.routes.server.start("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @staticmethod
    def queues_of(topic: str) -> int:
        return 1 if topic.startswith("%RETRY%") else 8  # autoCreateTopicEnable: 8 queues (defaultTopicQueueNums)

    @property
    def namesrv(self) -> str:
        return f"127.0.0.1:{self.routes.server.port}"

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.leader = leader_id(self.group, timeout=2.0)
            except AssertionError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.lt.run(self.routes.server.close())
        self.lt.close()


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokerGroup]:
    cpp_client()
    yield from running_group(tmp_path_factory.mktemp("brokers"), {"consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"})


@pytest.fixture(scope="module")
def route(group: LocalBrokerGroup) -> Iterator[LeaderRoute]:
    r = LeaderRoute(group)
    try:
        yield r
    finally:
        r.close()


def test_cpp_to_grpc_and_grpc_to_cpp(group: LocalBrokerGroup, route: LeaderRoute, tmp_path: pathlib.Path) -> None:
    prod = Worker(tmp_path, "p", "produce", "--namesrv", route.namesrv, "--topic", "X1", "--group", "xp",
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
    cons = Worker(tmp_path, "c", "consume", "--namesrv", route.namesrv, "--topic", "X2", "--group", "xg4")
    try:
        eventually("the 5.x client's messages", lambda: {m["body"] for m in cons.messages()} >= set(ids))
    finally:
        cons.kill()
    for m in cons.messages():
        assert (m["id"], m["tags"]) == (ids[m["body"]], "TagB")


def test_nothing_acknowledged_is_lost_across_a_leader_kill(
    group: LocalBrokerGroup, route: LeaderRoute, tmp_path: pathlib.Path
) -> None:
    cons = Worker(tmp_path, "c", "consume", "--namesrv", route.namesrv, "--topic", "F1", "--group", "fg")
    prod = Worker(tmp_path, "p", "produce", "--namesrv", route.namesrv, "--topic", "F1", "--group", "fp",
                  "--count", "-1", "--interval", "0.02", "--timeout-ms", "3000")  # fmt: skip
    try:
        cons.wait_started()
        eventually("consumption under way", lambda: len(cons.messages()) >= 50, timeout=90)
        old = route.leader
        acked_before = sum(r.get("status") == "OK" for r in prod.records())
        group.kill(old)
        killed_at = time.monotonic()
        eventually("a new leader", lambda: route.leader != old and route.leader, timeout=60)
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
