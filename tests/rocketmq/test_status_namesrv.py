"""`dledger status --namesrv ADDR` against an in-process NameServer with registered broker groups.

The NameServer runs on its own event loop in a thread (the command runs its own loop); the brokers register
over one connection that stays open, since the NameServer drops a broker whose connection closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import zlib
from collections.abc import Iterator

import pytest

from dledger.cli.main import main
from dledger.cli.namesrv_status import NamesrvStatusError, broker_rows, format_broker_table
from dledger.rocketmq.namesrv import NameServer, TopicQueues
from dledger.rocketmq.namesrv.bodies import encode_register_body
from dledger.rocketmq.remoting import RemotingCommand, RemotingConnection, RequestCode, ResponseCode, connect

BROKERS = [  # (cluster, broker name, broker id, address)
    ("RaftCluster", "broker-a", 0, "127.0.0.1:30911"),
    ("RaftCluster", "broker-a", 1, "127.0.0.1:30921"),
    ("RaftCluster", "broker-a", 3, "127.0.0.1:30931"),
    ("RaftCluster", "broker-b", 0, "127.0.0.1:30951"),
    ("RaftCluster", "broker-b", 1, "127.0.0.1:30941"),
    ("Other", "broker-x", 0, "10.0.0.9:10911"),
]


async def _register(conn: RemotingConnection, cluster: str, name: str, broker_id: int, addr: str) -> None:
    body = encode_register_body([TopicQueues("T", 4, 4)], (1, 1), compress=False)
    fields = {
        "brokerName": name,
        "brokerAddr": addr,
        "clusterName": cluster,
        "haServerAddr": addr,
        "brokerId": str(broker_id),
        "compressed": "false",
        "bodyCrc32": str(zlib.crc32(body) & 0x7FFFFFFF),
    }
    r = await conn.request(RemotingCommand.request(RequestCode.REGISTER_BROKER, fields, body=body), timeout=10)
    assert r.code == ResponseCode.SUCCESS, r.remark


@pytest.fixture
def namesrv() -> Iterator[str]:
    """A NameServer with the BROKERS registered, in a thread; yields its address."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ns = NameServer()

    async def up() -> RemotingConnection:
        await ns.start("127.0.0.1", 0)
        conn = await connect(f"127.0.0.1:{ns.port}")
        for b in BROKERS:
            await _register(conn, *b)
        return conn

    conn = asyncio.run_coroutine_threadsafe(up(), loop).result(30)
    try:
        yield f"127.0.0.1:{ns.port}"
    finally:

        async def down() -> None:
            conn.close()
            await ns.stop()

        asyncio.run_coroutine_threadsafe(down(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_table_shows_every_cluster_broker_name_and_id(namesrv: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--namesrv", namesrv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CLUSTER", "BROKER", "NAME", "BROKER", "ID", "ROLE", "ADDRESS"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        ["Other", "broker-x", "0", "master", "10.0.0.9:10911"],
        ["RaftCluster", "broker-a", "0", "master", "127.0.0.1:30911"],
        ["RaftCluster", "broker-a", "1", "slave", "127.0.0.1:30921"],
        ["RaftCluster", "broker-a", "3", "slave", "127.0.0.1:30931"],
        ["RaftCluster", "broker-b", "0", "master", "127.0.0.1:30951"],
        ["RaftCluster", "broker-b", "1", "slave", "127.0.0.1:30941"],
    ]


def test_json_lists_one_object_per_broker_address(namesrv: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a dead NameServer first in the list: the next one answers
    assert main(["status", "--namesrv", f"127.0.0.1:{_closed_port()};{namesrv}", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {(b["cluster"], b["brokerName"], b["brokerId"], b["address"]) for b in got} == set(BROKERS)
    masters = {b["brokerName"]: b["address"] for b in got if b["role"] == "master"}
    assert masters == {"broker-a": "127.0.0.1:30911", "broker-b": "127.0.0.1:30951", "broker-x": "10.0.0.9:10911"}


def test_an_unreachable_namesrv_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--namesrv", f"127.0.0.1:{_closed_port()}", "--timeout", "2"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and "cannot connect" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("bad", [";", "nohost", "127.0.0.1:notaport"])
def test_a_bad_address_is_one_line_and_exit_1(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--namesrv", bad]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("dledger: ")


@pytest.mark.parametrize(
    "info",
    [
        [],
        {"brokerAddrTable": []},
        {"brokerAddrTable": {"b": 5}},
        {"brokerAddrTable": {"b": {"brokerAddrs": {"x": "h:1"}}}},
        {"clusterAddrTable": {"C": "b"}},
    ],
)
def test_a_malformed_cluster_info_is_one_clear_error(info: object) -> None:
    with pytest.raises(NamesrvStatusError):
        broker_rows(info)


def test_a_broker_name_without_addresses_still_shows() -> None:
    rows = broker_rows({"brokerAddrTable": {}, "clusterAddrTable": {"C": ["gone"]}})
    assert [line.split() for line in format_broker_table(rows).splitlines()[1:]] == [["C", "gone", "-", "none", "-"]]


def test_admin_on_a_cluster_the_namesrv_does_not_know_is_one_line(
    namesrv: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["admin", "--namesrv", namesrv, "--cluster-name", "Nope", "topic", "create", "T"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cluster 'Nope'" in err and "RaftCluster" in err


def test_admin_on_a_cluster_whose_groups_published_no_endpoints_is_one_line(
    namesrv: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["admin", "--namesrv", namesrv, "--cluster-name", "RaftCluster", "topic", "create", "T"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'broker-a'" in err and "no RocketMQ 5 endpoints" in err


def test_admin_namesrv_needs_cluster_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "--namesrv", "127.0.0.1:9876", "topic", "list"]) == 2
    assert "--cluster-name" in capsys.readouterr().err
