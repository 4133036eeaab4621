"""Peer authentication on the gRPC peer service: sessions, node certificates, and the settings that pick a mode."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.net.handshake import HandshakeError
from dledger.node.config import ConfigError, NodeConfig, load_properties
from dledger.node.peer_auth import PeerGate, PeerSession, node_of_certificate
from dledger.node.transport import PeerServicer
from tests.node.certs import Authority

SECRET = b"k" * 24


def _vote(from_id: str, to_id: str = "n0") -> pb.PeerBatch:
    msg = pb.PeerMessage(group="g", from_id=from_id, to_id=to_id, request_vote=pb.RequestVote(term=1))
    return pb.PeerBatch(messages=[msg])


async def _serve(
    gate: PeerGate, received: list[pb.PeerMessage], creds: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    pb_grpc.add_RaftPeerServicer_to_server(PeerServicer("g", "n0", received.extend, gate=gate), server)
    gate.register(server)
    port = server.add_insecure_port("127.0.0.1:0") if creds is None else server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_session_speaks_only_for_its_node_and_only_on_its_connection() -> None:
    async def body() -> None:
        received: list[pb.PeerMessage] = []
        server, port = await _serve(PeerGate("secret", "g", "n0", SECRET), received)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                session = PeerSession(SECRET, "g", "n1", "n0")
                md = await session.metadata(channel, 5)
                stub = pb_grpc.RaftPeerStub(channel)
                assert await _code(stub.Send(_vote("n1"), metadata=md)) == grpc.StatusCode.OK
                assert [m.from_id for m in received] == ["n1"]
                assert await _code(stub.Send(_vote("n2"), metadata=md)) == grpc.StatusCode.PERMISSION_DENIED
                assert await _code(stub.Send(_vote("n1"))) == grpc.StatusCode.UNAUTHENTICATED
                # a second connection (channels of one process share connections unless told not to)
                options = [("grpc.use_local_subchannel_pool", 1)]
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as other:
                    stolen = pb_grpc.RaftPeerStub(other).Send(_vote("n1"), metadata=md)
                    assert await _code(stolen) == grpc.StatusCode.UNAUTHENTICATED
            assert [m.from_id for m in received] == ["n1"]
        finally:
            await server.stop(None)

    _run(body)


def test_a_wrong_secret_is_refused_before_any_message() -> None:
    async def body() -> None:
        received: list[pb.PeerMessage] = []
        gate = PeerGate("secret", "g", "n0", SECRET)
        server, port = await _serve(gate, received)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(HandshakeError, match="did not prove the group secret"):
                    await PeerSession(b"x" * 24, "g", "n1", "n0").metadata(channel, 5)
                with pytest.raises(HandshakeError, match="refused by the peer"):  # another group's dialler
                    await PeerSession(SECRET, "h", "n1", "n0").metadata(channel, 5)
            await asyncio.sleep(0.1)
            assert gate.refused == 2 and received == []
        finally:
            await server.stop(None)

    _run(body)


def test_tls_mode_takes_only_node_certificates_and_only_their_own_messages(tmp_path: pathlib.Path) -> None:
    ca = Authority.create(tmp_path, "ca")
    server_cert = ca.issue(tmp_path, "n0", uris=["dledger://g/n0"])
    node = ca.issue(tmp_path, "n1", uris=["dledger://g/n1"])
    client = ca.issue(tmp_path, "app")  # signed by the same CA, but names no node
    other_group = ca.issue(tmp_path, "x1", uris=["dledger://h/n1"])
    creds = grpc.ssl_server_credentials(
        [(server_cert.key.read_bytes(), server_cert.cert.read_bytes())],
        root_certificates=ca.cert.read_bytes(),
        require_client_auth=True,
    )

    async def send(issued: Any, batch: pb.PeerBatch, port: int) -> grpc.StatusCode:
        channel_creds = grpc.ssl_channel_credentials(
            ca.cert.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes()
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_creds) as channel:
            return await _code(pb_grpc.RaftPeerStub(channel).Send(batch, timeout=5))

    async def body() -> None:
        received: list[pb.PeerMessage] = []
        server, port = await _serve(PeerGate("tls", "g", "n0"), received, creds)
        try:
            assert await send(node, _vote("n1"), port) == grpc.StatusCode.OK
            assert await send(node, _vote("n2"), port) == grpc.StatusCode.PERMISSION_DENIED
            assert await send(client, _vote("n1"), port) == grpc.StatusCode.UNAUTHENTICATED
            assert await send(other_group, _vote("n1"), port) == grpc.StatusCode.UNAUTHENTICATED
            assert [m.from_id for m in received] == ["n1"]
        finally:
            await server.stop(None)

    _run(body)


def test_node_of_certificate_wants_exactly_one_node_of_the_group() -> None:
    assert node_of_certificate([b"127.0.0.1", b"dledger://g/n3"], "g") == "n3"
    for uris in ([], [b"dledger://h/n3"], [b"dledger://g/n1", b"dledger://g/n2"], [b"dledger://g/"]):
        with pytest.raises(Exception, match="names no single node"):
            node_of_certificate(uris, "g")


def test_the_mode_follows_the_settings(tmp_path: pathlib.Path) -> None:
    local = {"n0": "127.0.0.1:7000", "n1": "localhost:7001", "n2": "[::1]:7002"}
    remote = {"n0": "10.0.0.1:7000", "n1": "10.0.0.2:7000"}
    assert NodeConfig(self_id="n0", peers=local, store_dir=tmp_path).peer_auth_mode == "none"
    assert NodeConfig(self_id="n0", peers=remote, store_dir=tmp_path, peer_secret=SECRET).peer_auth_mode == "secret"
    assert NodeConfig(self_id="n0", peers=remote, store_dir=tmp_path, peer_auth="none").peer_auth_mode == "none"
    with pytest.raises(ConfigError, match=r"10\.0\.0\.1:7000, 10\.0\.0\.2:7000 are not on loopback"):
        NodeConfig(self_id="n0", peers=remote, store_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least 16"):
        NodeConfig(self_id="n0", peers=local, store_dir=tmp_path, peer_secret=b"short")
    with pytest.raises(ConfigError, match="secret needs a secret"):
        NodeConfig(self_id="n0", peers=local, store_dir=tmp_path, peer_auth="secret")
    with pytest.raises(ConfigError, match="tls needs TLS"):
        NodeConfig(self_id="n0", peers=local, store_dir=tmp_path, peer_auth="tls")
    assert "k" * 10 not in repr(NodeConfig(self_id="n0", peers=local, store_dir=tmp_path, peer_secret=SECRET))


def test_broker_conf_keys_set_the_secret_and_the_mode(tmp_path: pathlib.Path) -> None:
    secret_file = tmp_path / "peer.secret"
    secret_file.write_text("s" * 20 + "\n")
    conf = tmp_path / "broker.conf"
    base = "dLegerSelfId=n0\ndLegerPeers=n0-10.0.0.1:7000;n1-10.0.0.2:7000\nstorePathRootDir=/tmp/x\n"
    conf.write_text(base + f"dLegerPeerSecretFile={secret_file}\n")
    config = NodeConfig.from_file(conf)
    assert config.peer_secret == b"s" * 20 and config.peer_auth_mode == "secret"
    conf.write_text(base + "dLegerPeerSecret=" + "t" * 16 + "\n")
    assert NodeConfig.from_file(conf).peer_secret == b"t" * 16
    conf.write_text(base + "dLegerPeerAuth=none\n")
    assert NodeConfig.from_file(conf).peer_auth_mode == "none"
    conf.write_text(base + "dLegerPeerAuth=maybe\n")
    with pytest.raises(ConfigError, match="dLegerPeerAuth: 'maybe' must be secret, tls or none"):
        NodeConfig.from_file(conf)
    conf.write_text(base + f"dLegerPeerSecretFile={tmp_path / 'missing'}\n")
    with pytest.raises(ConfigError, match="dLegerPeerSecretFile: cannot read"):
        NodeConfig.from_file(conf)
    assert load_properties(conf)  # the file itself parses
