"""The registrar against a real NameServer in this process: broker ids by leadership, re-registration at
once on a leader change, every period after a NameServer restart, unregistration at stop; and its keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dledger.rocketmq.namesrv import NameServer, TopicQueues
from dledger.rocketmq.registrar import Registrar, RegistrarConfig, RegistrarConfigError, broker_id_for
from dledger.rocketmq.remoting import RemotingCommand, RequestCode, ResponseCode, fastjson, invoke


def test_broker_ids_follow_leadership() -> None:
    peers = ["n2", "n0", "n1"]
    assert [broker_id_for(p, peers, "n1") for p in peers] == [3, 1, 0]
    assert [broker_id_for(p, peers, "n0") for p in peers] == [3, 0, 2]
    assert [broker_id_for(p, peers, None) for p in peers] == [3, 1, 2]
    assert [broker_id_for(p, peers, "gone") for p in peers] == [3, 1, 2]


def test_config_keys() -> None:
    assert RegistrarConfig.from_properties({}, broker_name="b", default_host="h") is None
    cfg = RegistrarConfig.from_properties(
        {"namesrvAddr": "a:9876; b:9877", "listenPort": "10921"}, broker_name="b", default_host="10.1.1.1"
    )
    assert cfg == RegistrarConfig("DefaultCluster", "b", ("a:9876", "b:9877"), "10.1.1.1:10921", 30.0)
    cfg = RegistrarConfig.from_properties(
        {"namesrvAddr": "a:1", "brokerIP1": "1.2.3.4", "brokerClusterName": "C", "registerNameServerPeriod": "500"},
        broker_name="b",
        default_host="h",
    )
    assert cfg is not None and cfg.broker_addr == "1.2.3.4:10911" and cfg.cluster == "C" and cfg.period_s == 0.5
    for bad, why in (
        ({"namesrvAddr": "a:1,b:2"}, "namesrvAddr"),
        ({"namesrvAddr": "a:1", "listenPort": "x"}, "listenPort"),
        ({"namesrvAddr": "a:1", "registerNameServerPeriod": "5"}, "registerNameServerPeriod"),
    ):
        with pytest.raises(RegistrarConfigError, match=why):
            RegistrarConfig.from_properties(bad, broker_name="b", default_host="h")


async def _route(port: int, topic: str = "T") -> dict[str, Any] | None:
    r = await invoke(f"127.0.0.1:{port}", RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic}))
    if r.code != ResponseCode.SUCCESS:
        return None
    route: dict[str, Any] = fastjson.loads(r.body)
    return route


async def _addrs(port: int) -> dict[str, str] | None:
    r = await _route(port)
    return None if r is None else r["brokerDatas"][0]["brokerAddrs"]


async def _until(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await probe():
        assert loop.time() - start < timeout, "condition not reached"
        await asyncio.sleep(0.01)
    return loop.time() - start


def test_registrars_follow_the_leader_and_survive_a_name_server_restart() -> None:
    async def main() -> None:
        ns = NameServer(scan_interval=0.05)
        await ns.start("127.0.0.1", 0)
        port = ns.port
        leader: list[str | None] = ["n0"]
        peers = ["n0", "n1", "n2"]
        regs = [
            Registrar(
                RegistrarConfig("C", "g1", (f"127.0.0.1:{port}",), f"127.0.0.1:{10911 + k}", period_s=30.0),
                self_id=p,
                peer_ids=peers,
                leader_id=lambda: leader[0],
                topics=lambda: [TopicQueues("T", 8, 8)],
            )
            for k, p in enumerate(peers)
        ]
        for r in regs:
            await r.start()
        try:

            async def three() -> bool:
                return await _addrs(port) == {"0": "127.0.0.1:10911", "2": "127.0.0.1:10912", "3": "127.0.0.1:10913"}

            await _until(three)
            # a leader change: every replica re-registers at once, long before the next period
            leader[0] = "n2"
            for r in regs:
                r.on_role_change("follower", 2, "n2")

            async def flipped() -> bool:
                return await _addrs(port) == {"0": "127.0.0.1:10913", "1": "127.0.0.1:10911", "2": "127.0.0.1:10912"}

            assert await _until(flipped) < 0.4
            # a restarted name server (no state) has every broker back long before the 30 s period: the
            # lost connections make the registrars retry every second
            await ns.stop()
            await asyncio.sleep(1.5)  # down across a retry
            ns = NameServer(scan_interval=0.05)
            await ns.start("127.0.0.1", port)
            assert await _until(flipped, timeout=20.0) < 10.0
        finally:
            for r in regs:
                await r.stop()
        # stopping unregisters: the route is gone without waiting for the 120 s expiry
        assert await _route(port) is None
        await ns.stop()

    asyncio.run(main())


def test_an_unreachable_name_server_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        reg = Registrar(
            RegistrarConfig("C", "g1", ("127.0.0.1:1",), "127.0.0.1:10911", period_s=0.05),
            self_id="n0",
            peer_ids=["n0"],
            leader_id=lambda: "n0",
            topics=list,
        )
        await reg.start()
        await asyncio.sleep(0.5)
        await reg.stop()

    with caplog.at_level("INFO", logger="dledger.registrar"):
        asyncio.run(main())
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
