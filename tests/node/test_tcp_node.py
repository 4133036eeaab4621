"""Nodes on the TCP peer transport (`dLegerPeerTransport=tcp`): the configuration keys, a group that
replicates and fails over in one process, and a node of another certificate authority kept out."""

from __future__ import annotations

import asyncio
import pathlib
import socket

import pytest

from dledger.node.config import ConfigError, NodeConfig
from dledger.node.server import DLedgerServer
from dledger.node.tcp_listener import TcpPeerListener
from dledger.node.tcp_peer import tcp_peer_address
from dledger.node.tcp_transport import TcpPeerTransport
from dledger.testing.launcher import free_port_pairs
from tests.node.certs import Authority
from tests.node.procs import ProcessGroup, leader_sigkill_keeps_every_acknowledged_append

pytestmark = pytest.mark.process  # starts processes

SECRET = b"a group secret of 32 bytes......"
OFFSET = 1000


def tcp_peers(ids: list[str]) -> dict[str, str]:
    return {i: f"127.0.0.1:{p}" for i, p in zip(ids, free_port_pairs(len(ids), OFFSET), strict=True)}


def test_the_transport_keys_are_read_and_checked(tmp_path: pathlib.Path) -> None:
    props = {
        "dLegerPeers": "n0-127.0.0.1:40911;n1-127.0.0.1:40912",
        "dLegerSelfId": "n0",
        "storePathRootDir": str(tmp_path),
        "dLegerPeerTransport": "TCP",
        "dledgerPeerPortOffset": "-2",
    }
    config = NodeConfig.from_properties(props)
    assert (config.peer_transport, config.peer_port_offset) == ("tcp", -2)
    assert tcp_peer_address(config.address, config.peer_port_offset) == ("127.0.0.1", 40909)
    assert NodeConfig(self_id="n0", peers={"n0": "127.0.0.1:1"}, store_dir=tmp_path).peer_transport == "grpc"
    with pytest.raises(ConfigError, match=r"dLegerPeerTransport.*must be grpc or tcp"):
        NodeConfig.from_properties({**props, "dLegerPeerTransport": "udp"})
    with pytest.raises(ConfigError, match=r"n0's peer port would be 65911"):
        NodeConfig.from_properties({**props, "dledgerPeerPortOffset": "25000"})
    with pytest.raises(ValueError, match=r"outside 1\.\.65535"):
        tcp_peer_address("127.0.0.1:65000", 1000)


async def _leader(servers: list[DLedgerServer], timeout: float = 30.0) -> DLedgerServer:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        leaders = [s for s in servers if s.is_leader]
        if len(leaders) == 1:
            return leaders[0]
        assert loop.time() < deadline, "no single leader"
        await asyncio.sleep(0.02)


async def _applied(server: DLedgerServer, index: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.applied_index < index:
        assert loop.time() < deadline, f"{server.config.self_id} did not apply {index}"
        await asyncio.sleep(0.02)


def test_a_group_on_tcp_replicates_and_fails_over_without_losing_entries(tmp_path: pathlib.Path) -> None:
    peers = tcp_peers(["n0", "n1", "n2"])

    def config(node_id: str) -> NodeConfig:
        return NodeConfig(self_id=node_id, peers=peers, store_dir=tmp_path / node_id, peer_transport="tcp",
                          peer_secret=SECRET)  # fmt: skip

    async def main() -> None:
        servers = [DLedgerServer(config(i)) for i in peers]
        for s in servers:
            await s.start()
        try:
            assert all(isinstance(s.peer_listener, TcpPeerListener) for s in servers)
            assert all(isinstance(s.node.transport, TcpPeerTransport) for s in servers)
            leader = await _leader(servers)
            acked = {}
            for k in range(40):
                index, _ = await leader.append([f"before-{k}".encode()])
                acked[index] = f"before-{k}".encode()
            await leader.stop(grace=0)
            rest = [s for s in servers if s is not leader]
            new = await _leader(rest)
            for k in range(40):
                index, _ = await new.append([f"after-{k}".encode()])
                acked[index] = f"after-{k}".encode()
            for s in rest:
                await _applied(s, max(acked))
                for index, data in acked.items():
                    assert (await s.get(index)).data == data
            assert new.node.transport is not None and new.node.transport.stats["batches_sent"] > 0
        finally:
            for s in servers:
                await s.stop(grace=0)

    asyncio.run(main())


def test_a_node_of_another_ca_is_refused_on_tcp(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    ca, rogue = Authority.create(tmp_path, "ca"), Authority.create(tmp_path, "rogue")
    peers = tcp_peers(["n0", "n1", "n2"])

    def config(node_id: str, authority: Authority) -> NodeConfig:
        issued = authority.issue(tmp_path, f"{node_id}-{authority.name}", uris=[f"dledger://default/{node_id}"])
        return NodeConfig(self_id=node_id, peers=peers, store_dir=tmp_path / node_id, peer_transport="tcp",
                          tls_ca=authority.cert, tls_cert=issued.cert, tls_key=issued.key)  # fmt: skip

    async def main() -> None:
        servers = [DLedgerServer(config("n0", ca)), DLedgerServer(config("n1", ca)),
                   DLedgerServer(config("n2", rogue))]  # fmt: skip
        for s in servers:
            await s.start()
        try:
            leader = await _leader(servers[:2])
            index, _ = await leader.append([b"over tls"])
            follower = next(s for s in servers[:2] if s is not leader)
            await _applied(follower, index)
            assert servers[2].applied_index < index
            assert servers[2].node.node_status().role != "leader"
        finally:
            for s in servers:
                await s.stop(grace=0)

    asyncio.run(main())
    text = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
    assert "dledger.node.tcp_transport: peer n2 (control lane): [SSL: CERTIFICATE_VERIFY_FAILED]" in text


def test_node_processes_on_tcp_keep_every_acknowledged_append_when_the_leader_is_killed(
    tmp_path: pathlib.Path,
) -> None:
    group = ProcessGroup(tmp_path)
    group.peers = tcp_peers(list(group.peers))
    group.extra_args = ["--peer-transport", "tcp"]
    try:
        group.start_all()
        old, new = leader_sigkill_keeps_every_acknowledged_append(group)  # the old leader rejoins over tcp
        assert "peer n" in group.log_text(old) and "connected (from" in group.log_text(new)
    finally:
        group.stop_all()


def test_a_taken_peer_port_stops_the_start_with_a_clear_error(tmp_path: pathlib.Path) -> None:
    peers = tcp_peers(["n0"])
    config = NodeConfig(self_id="n0", peers=peers, store_dir=tmp_path / "n0", peer_transport="tcp")
    host, port = tcp_peer_address(config.address, config.peer_port_offset)

    async def main() -> None:
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((host, port))
            squatter.listen()
            with pytest.raises(OSError, match=f"cannot listen for peers on {host}:{port}"):
                await DLedgerServer(config).start()
        server = DLedgerServer(config)  # the store was closed and nothing is left listening: a retry starts
        await server.start()
        try:
            await _leader([server])
        finally:
            await server.stop(grace=0)

    asyncio.run(main())
