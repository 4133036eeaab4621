"""Two broker groups behind one NameServer, through the official RocketMQ 5 Python client: QueryRoute on one
group's endpoint returns the queues of every group that holds the topic (each with its own group's
endpoints), so a producer connected to one group spreads its sends over both, and a consumer connected to
one group receives everything."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import pytest

from bench.namesrv_flip import eventually, route_addrs
from dledger.cli.broker_groups import LocalBrokerCluster
from tests.rocketmq.groups import FROM_FIRST, started_cluster

rocketmq = pytest.importorskip("rocketmq")

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]  # noqa: E402
from rocketmq.grpc_protocol import service_pb2 as s  # noqa: E402
from rocketmq.grpc_protocol import service_pb2_grpc as sg  # noqa: E402

from tests.rocketmq_v5.util import drain, message, producer, send_eventually, simple_consumer  # noqa: E402

pytestmark = pytest.mark.process  # starts processes

TOPIC = "spread"


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[LocalBrokerCluster]:
    with started_cluster(tmp_path / "c", FROM_FIRST) as c:
        yield c


def _query_route(endpoint: str) -> list[d.MessageQueue]:
    with grpc.insecure_channel(endpoint) as channel:
        stub = sg.MessagingServiceStub(channel)
        r = stub.QueryRoute(
            s.QueryRouteRequest(topic=d.Resource(name=TOPIC)), metadata=[("x-mq-client-id", "t")], timeout=10
        )
    assert r.status.code == d.Code.OK, r.status.message
    return list(r.message_queues)


def test_a_producer_on_one_group_spreads_over_both_and_a_consumer_gets_everything(cluster: LocalBrokerCluster) -> None:
    a, b = cluster.groups
    for g in (a, b):  # the topic exists on both groups (auto-created by a first send on each)
        with producer(g) as p:
            send_eventually(p, message(TOPIC, f"first on {g.group}".encode()))
    eventually(
        "both groups' topic registered",
        lambda: (
            {n for n in ("broker-a", "broker-b") if route_addrs(cluster.namesrv_addr, TOPIC, n).get(0)}
            == {"broker-a", "broker-b"}
        ),
        120,
    )

    def both_in_route() -> list[d.MessageQueue] | None:
        queues = _query_route(a.endpoints["n0"])
        return queues if {q.broker.name for q in queues} == {"broker-a", "broker-b"} else None

    queues = eventually("QueryRoute on broker-a to name broker-b's queues", both_in_route, 60)
    b_ports = {int(addr.rpartition(":")[2]) for addr in b.endpoints.values()}
    for q in queues:
        if q.broker.name == "broker-b":
            assert {e.port for e in q.broker.endpoints.addresses} == b_ports
            assert q.permission == d.Permission.READ_WRITE

    sent: set[str] = set()
    landed: set[str] = set()
    with producer(a, (TOPIC,)) as p:
        for k in range(40):
            receipt = send_eventually(p, message(TOPIC, f"m{k}".encode()))
            sent.add(receipt.message_id)
            landed.add(receipt.message_queue.message_queue0().broker.name)
    assert landed == {"broker-a", "broker-b"}
    with simple_consumer(a, "spread-readers", TOPIC) as c:
        got = drain(c, sent, timeout=120)
    assert sent <= set(got)
