"""Two broker groups (3 replicas each) and a NameServer, started by the project's launcher, driven by the official
RocketMQ 5 Python client: one producer spreads a topic's sends over both groups; SIGKILL of one group's leader
mid-stream never stops the other group's acknowledgements, the killed group acknowledges again after its
failover, and a consumer receives every acknowledged message from both groups."""

from __future__ import annotations

import pathlib
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.namesrv_flip import route_addrs
from dledger.cli.broker_groups import LocalBrokerCluster
from tests.rocketmq.groups import FROM_FIRST, started_cluster

pytest.importorskip("rocketmq")

from tests.rocketmq_v5.util import (
    drain,
    eventually,
    leader_id,
    message,
    producer,
    send_eventually,
    simple_consumer,
)

pytestmark = pytest.mark.process  # starts processes

TOPIC = "spread-kill"
NAMES = ("broker-a", "broker-b")


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[LocalBrokerCluster]:
    with started_cluster(tmp_path / "c", FROM_FIRST) as c:
        yield c


def test_one_groups_leader_killed_the_other_keeps_acknowledging_and_nothing_is_lost(
    cluster: LocalBrokerCluster,
) -> None:
    a, b = cluster.groups
    for g in (a, b):  # the topic on both groups (auto-created by a first send to each)
        with producer(g) as p:
            send_eventually(p, message(TOPIC, f"first on {g.group}".encode()))
    eventually(
        "both groups' topic registered with a master",
        lambda: all(route_addrs(cluster.namesrv_addr, TOPIC, n).get(0) for n in NAMES),
        120,
    )

    acked: list[tuple[str, str]] = []  # (broker name, message id), in acknowledgement order
    lock = threading.Lock()
    stop = threading.Event()

    def per_group() -> Counter[str]:
        with lock:
            return Counter(name for name, _ in acked)

    with producer(a, (TOPIC,)) as p:
        # the producer, connected to broker-a, learns broker-b's queues from QueryRoute (refreshed every 30 s)
        def both_landed() -> bool:
            receipt = p.send(message(TOPIC, b"probe"))
            with lock:
                acked.append((receipt.message_queue.message_queue0().broker.name, receipt.message_id))
            return set(per_group()) == set(NAMES)

        eventually("sends landing on both groups", both_landed, 120, interval=0.1)

        def produce(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    receipt = p.send(message(TOPIC, f"w{worker}-{n}".encode()))
                except Exception:
                    continue  # not acknowledged: the test promises nothing about it
                with lock:
                    acked.append((receipt.message_queue.message_queue0().broker.name, receipt.message_id))

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        try:
            eventually("10 acknowledged sends on each group", lambda: min(per_group()[n] for n in NAMES) >= 10, 120)
            victim = leader_id(a)
            a.kill(victim)  # SIGKILL broker-a's leader, mid-stream
            at_kill = per_group()
            eventually(
                "broker-b acknowledging after broker-a's leader was killed",
                lambda: per_group()["broker-b"] >= at_kill["broker-b"] + 20,
                120,
            )
            assert leader_id(a) != victim
            eventually(
                "broker-a acknowledging again after its failover",
                lambda: per_group()["broker-a"] >= at_kill["broker-a"] + 10,
                120,
            )
            later = per_group()
            eventually("broker-b still acknowledging", lambda: per_group()["broker-b"] >= later["broker-b"] + 10, 120)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
    assert not any(t.is_alive() for t in threads)

    ids = {message_id for _, message_id in acked}
    with simple_consumer(b, "spread-kill-readers", TOPIC) as c:  # through the group that was not hit
        got = drain(c, ids, timeout=180)
    assert ids <= set(got), f"lost {len(ids - set(got))} of {len(ids)} acknowledged messages"
