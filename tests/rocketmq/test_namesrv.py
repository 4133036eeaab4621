"""The NameServer through a real socket: registration and routes (fastjson and standard JSON), a master
changing hands, compressed bodies, cluster and topic listings, KV config, expiry of silent brokers on an
injected clock, brokers dropped with their connection, unsupported codes and malformed input."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dledger.rocketmq.namesrv import NameServer, TopicQueues
from dledger.rocketmq.namesrv.bodies import encode_register_body
from dledger.rocketmq.remoting import (
    RemotingCommand,
    RemotingConnection,
    RequestCode,
    ResponseCode,
    SerializeType,
    connect,
    fastjson,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


Scenario = Callable[[NameServer, RemotingConnection, Clock], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        clock = Clock()
        ns = NameServer(clock=clock, scan_interval=0.02)
        await ns.start("127.0.0.1", 0)
        conn = await connect(f"127.0.0.1:{ns.port}")
        try:
            await scenario(ns, conn, clock)
        finally:
            conn.close()
            await ns.stop()

    asyncio.run(main())


async def call(conn: RemotingConnection, code: int, fields: dict[str, str] | None = None, **kw: Any) -> RemotingCommand:
    return await conn.request(RemotingCommand.request(code, fields, **kw), timeout=10)


async def register(
    conn: RemotingConnection,
    addr: str,
    broker_id: int,
    *,
    name: str = "g1",
    cluster: str = "C",
    topics: tuple[TopicQueues, ...] = (TopicQueues("T", 8, 8),),
    version: tuple[int, int] = (1, 1),
    compressed: bool = False,
    crc: int | None = None,
) -> RemotingCommand:
    body = encode_register_body(topics, version, compress=compressed)
    fields = {
        "brokerName": name,
        "brokerAddr": addr,
        "clusterName": cluster,
        "haServerAddr": addr,
        "brokerId": str(broker_id),
        "compressed": str(compressed).lower(),
        "bodyCrc32": str(zlib.crc32(body) & 0x7FFFFFFF if crc is None else crc),
    }
    return await call(conn, RequestCode.REGISTER_BROKER, fields, body=body)


async def route(conn: RemotingConnection, topic: str = "T", version: int = 0) -> dict[str, Any] | None:
    r = await call(conn, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic}, version=version)
    if r.code == ResponseCode.TOPIC_NOT_EXIST:
        return None
    assert r.code == ResponseCode.SUCCESS, r.remark
    parsed: dict[str, Any] = fastjson.loads(r.body)
    return parsed


def addrs(r: dict[str, Any] | None, name: str = "g1") -> dict[str, str]:
    assert r is not None
    return next(b["brokerAddrs"] for b in r["brokerDatas"] if b["brokerName"] == name)


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_route_names_master_and_slaves_in_both_json_dialects() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        assert (await register(conn, "10.0.0.1:10911", 0)).code == ResponseCode.SUCCESS
        slave = await register(conn, "10.0.0.2:10911", 1)
        assert slave.ext("masterAddr") == "10.0.0.1:10911" and slave.ext("haServerAddr") == "10.0.0.1:10911"
        await register(conn, "10.0.0.3:10911", 2)
        raw = await call(conn, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"})
        assert b'"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911",2:"10.0.0.3:10911"}' in raw.body
        std = await call(conn, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, version=401)
        assert b'"brokerAddrs":{"0":"10.0.0.1:10911"' in std.body
        asked = await call(conn, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T", "acceptStandardJsonOnly": "true"})
        assert asked.body == std.body
        r = await route(conn)
        assert r is not None
        assert r["queueDatas"] == [
            {"brokerName": "g1", "perm": 6, "readQueueNums": 8, "topicSysFlag": 0, "writeQueueNums": 8}
        ]
        assert r["brokerDatas"][0]["cluster"] == "C"
        missing = await call(conn, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "nope"})
        assert missing.code == ResponseCode.TOPIC_NOT_EXIST == 17 and "nope" in (missing.remark or "")

    run(scenario)


def test_a_new_master_takes_id_0_and_the_old_one_becomes_a_slave() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        for i, addr in enumerate(("a:1", "b:1", "c:1")):
            await register(conn, addr, i)
        await register(conn, "b:1", 0)  # b leads now
        assert addrs(await route(conn)) == {"0": "b:1", "2": "c:1"}
        await register(conn, "c:1", 1)
        await register(conn, "a:1", 2, topics=(), version=(9, 9))
        assert addrs(await route(conn)) == {"0": "b:1", "1": "c:1", "2": "a:1"}
        # a slave's topic table never changes the queues; the master's does
        await register(conn, "b:1", 0, topics=(TopicQueues("T", 4, 4), TopicQueues("U", 2, 2)), version=(2, 2))
        r = await route(conn)
        assert r is not None and r["queueDatas"][0]["readQueueNums"] == 4
        assert await route(conn, "U") is not None

    run(scenario)


def test_compressed_registration_and_crc() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        topics = (TopicQueues("T", 8, 8), TopicQueues("%RETRY%g", 1, 1))
        ok = await register(conn, "a:1", 0, topics=topics, compressed=True)
        assert ok.code == ResponseCode.SUCCESS, ok.remark
        assert await route(conn, "%RETRY%g") is not None
        bad = await register(conn, "b:1", 0, name="g2", crc=12345)
        assert bad.code == ResponseCode.SYSTEM_ERROR and bad.remark == "crc32 not match"
        garbage = await call(
            conn,
            RequestCode.REGISTER_BROKER,
            {"brokerName": "g3", "brokerAddr": "x:1", "clusterName": "C", "brokerId": "0", "compressed": "true"},
            body=b"not zlib",
        )
        assert garbage.code == ResponseCode.SYSTEM_ERROR and "inflate" in (garbage.remark or "")
        no_name = await call(
            conn, RequestCode.REGISTER_BROKER, {"brokerAddr": "x:1", "clusterName": "C", "brokerId": "0"}
        )
        assert no_name.code == ResponseCode.SYSTEM_ERROR and no_name.remark == "the custom field <brokerName> is null"
        assert await route(conn, "T") is not None and set(ns.processor.routes.brokers) == {"g1"}

    run(scenario)


def test_cluster_info_topic_lists_and_delete() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        await register(conn, "a:1", 0, name="g1", cluster="C1", topics=(TopicQueues("T"), TopicQueues("X")))
        await register(conn, "b:1", 0, name="g2", cluster="C1", topics=(TopicQueues("T"),))
        await register(conn, "c:1", 0, name="g3", cluster="C2", topics=(TopicQueues("T"), TopicQueues("Y")))
        info = fastjson.loads((await call(conn, RequestCode.GET_BROKER_CLUSTER_INFO)).body)
        assert info["clusterAddrTable"] == {"C1": ["g1", "g2"], "C2": ["g3"]}
        assert info["brokerAddrTable"]["g2"]["brokerAddrs"] == {"0": "b:1"}
        topics = fastjson.loads((await call(conn, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)).body)
        assert topics == {"topicList": ["T", "X", "Y"]}
        c2 = fastjson.loads((await call(conn, RequestCode.GET_TOPICS_BY_CLUSTER, {"cluster": "C2"})).body)
        assert c2 == {"topicList": ["T", "Y"]}
        r = await route(conn)
        assert r is not None and [q["brokerName"] for q in r["queueDatas"]] == ["g1", "g2", "g3"]
        await call(conn, RequestCode.DELETE_TOPIC_IN_NAMESRV, {"topic": "T", "clusterName": "C1"})
        r = await route(conn)
        assert r is not None and [q["brokerName"] for q in r["queueDatas"]] == ["g3"]
        await call(conn, RequestCode.DELETE_TOPIC_IN_NAMESRV, {"topic": "T"})
        assert await route(conn) is None
        await call(
            conn,
            RequestCode.UNREGISTER_BROKER,
            {"brokerName": "g3", "brokerAddr": "c:1", "clusterName": "C2", "brokerId": "0"},
        )
        assert await route(conn, "Y") is None and await route(conn, "X") is not None

    run(scenario)


def test_kv_config() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        put = await call(conn, RequestCode.PUT_KV_CONFIG, {"namespace": "N", "key": "k", "value": "v"})
        assert put.code == ResponseCode.SUCCESS
        got = await call(conn, RequestCode.GET_KV_CONFIG, {"namespace": "N", "key": "k"})
        assert got.code == ResponseCode.SUCCESS and got.ext("value") == "v"
        listed = await call(conn, RequestCode.GET_KVLIST_BY_NAMESPACE, {"namespace": "N"})
        assert fastjson.loads(listed.body) == {"table": {"k": "v"}}
        await call(conn, RequestCode.DELETE_KV_CONFIG, {"namespace": "N", "key": "k"})
        gone = await call(conn, RequestCode.GET_KV_CONFIG, {"namespace": "N", "key": "k"})
        assert gone.code == ResponseCode.QUERY_NOT_FOUND == 22
        # a ROCKETMQ-serialized request is answered in kind
        r = await call(
            conn, RequestCode.GET_KV_CONFIG, {"namespace": "N", "key": "k"}, serialize_type=SerializeType.ROCKETMQ
        )
        assert r.serialize_type == SerializeType.ROCKETMQ and r.code == ResponseCode.QUERY_NOT_FOUND

    run(scenario)


def test_silent_brokers_expire_after_120_s_and_heartbeats_keep_them() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        await register(conn, "a:1", 0)
        await register(conn, "b:1", 1)
        clock.t += 100
        beat = await call(conn, RequestCode.BROKER_HEARTBEAT, {"clusterName": "C", "brokerAddr": "a:1"})
        assert beat.code == ResponseCode.SUCCESS
        clock.t += 30  # b silent 130 s, a 30 s

        async def b_gone() -> bool:
            return addrs(await route(conn)) == {"0": "a:1"}

        await eventually(b_gone)
        clock.t += 121

        async def all_gone() -> bool:
            return await route(conn) is None

        await eventually(all_gone)
        assert ns.processor.routes.clusters == {}

    run(scenario)


def test_a_closed_connection_drops_the_brokers_registered_over_it() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        other = await connect(f"127.0.0.1:{ns.port}")
        await register(other, "b:1", 0, name="g2")
        await register(conn, "a:1", 0)
        assert await route(conn) is not None
        other.close()

        async def g2_gone() -> bool:
            r = await route(conn)
            return r is not None and [b["brokerName"] for b in r["brokerDatas"]] == ["g1"]

        await eventually(g2_gone)

    run(scenario)


def test_unsupported_codes_are_answered_with_a_remark() -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        r = await call(conn, RequestCode.SEND_MESSAGE)
        assert r.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED == 3
        assert "SEND_MESSAGE" in (r.remark or "")
        r = await call(conn, 31999)
        assert r.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED and "31999" in (r.remark or "")

    run(scenario)


@pytest.mark.parametrize("seed", range(3))
def test_malformed_frames_never_crash_the_name_server(seed: int) -> None:
    async def scenario(ns: NameServer, conn: RemotingConnection, clock: Clock) -> None:
        rng = random.Random(seed)
        await register(conn, "a:1", 0)
        for _ in range(40):
            size = rng.randrange(1, 200)
            head = rng.choice(
                [b"", b"\x00\x00\x00\x20", b"\x00\x00\x00\x30\x01\x00\x00\x10", b"\x00\x00\x00\x10\x00\x00\x00\x0c"]
            )
            data = head + rng.randbytes(size)
            reader, writer = await asyncio.open_connection("127.0.0.1", ns.port)
            writer.write(data)
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(65536), 0.3)
            except TimeoutError:
                pass  # an incomplete frame: the server waits for the rest
            writer.close()
        assert addrs(await route(conn)) == {"0": "a:1"}

    run(scenario)
