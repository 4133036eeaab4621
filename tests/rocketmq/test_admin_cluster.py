"""`dledger admin --namesrv ADDR --cluster-name C topic create`: the topic is created on every group of the
cluster, found through the NameServer (two local groups of three replica processes)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest

from bench.namesrv_flip import eventually, route_addrs
from dledger.cli.admin_cluster import ClusterAdminError, cluster_groups
from dledger.cli.broker_groups import DEFAULT_CLUSTER, LocalBrokerCluster
from dledger.cli.main import main
from tests.rocketmq.groups import started_cluster

pytestmark = pytest.mark.process  # starts processes


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[LocalBrokerCluster]:
    with started_cluster(tmp_path / "c") as c:
        yield c


def _groups(addr: str) -> dict[str, list[str]] | None:
    try:
        return cluster_groups(addr, DEFAULT_CLUSTER)
    except ClusterAdminError:
        return None


def test_a_topic_created_on_a_cluster_lands_on_every_group(
    cluster: LocalBrokerCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    addr = cluster.namesrv_addr
    found = eventually(
        "both groups' masters publish their endpoints",
        lambda: g if (g := _groups(addr)) and set(g) == {"broker-a", "broker-b"} else None,
        120,
    )
    for g in cluster.groups:
        assert sorted(found[g.group]) == sorted(g.endpoints.values())

    argv = ["admin", "--namesrv", addr, "--cluster-name", DEFAULT_CLUSTER, "--timeout", "30", "--json"]
    assert main([*argv, "topic", "create", "Orders", "--queues", "3"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert set(created) == {"broker-a", "broker-b"}

    for g in cluster.groups:  # each group holds the topic, asked through its own endpoints alone
        endpoints = ";".join(g.endpoints.values())
        assert main(["admin", "--endpoints", endpoints, "--json", "topic", "describe", "Orders"]) == 0
        assert json.loads(capsys.readouterr().out)["queues"] == 3
    eventually(  # and registers it, so the NameServer's route names both groups' masters
        "both groups in the route of Orders",
        lambda: all(route_addrs(addr, "Orders", n).get(0) for n in ("broker-a", "broker-b")),
        60,
    )

    assert main([*argv, "topic", "create", "Orders", "--queues", "3"]) == 1  # already there: each group says so
    err = capsys.readouterr().err
    assert "broker-a" in err and "broker-b" in err
