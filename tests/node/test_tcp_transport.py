"""The TCP peer transport in one process over loopback: delivery and order, the handshake (wrong group,
recipient, secret, mode, certificate authority refused with a logged reason), malformed input, forged
batches, and a silent peer detected and redialled."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from dledger._proto import dledger_pb2 as pb
from dledger.net.framing import LENGTH
from dledger.net.peer_frames import FrameType, encode
from dledger.net.tls import TlsConfig
from dledger.node.peer_auth import PeerAuthMode
from dledger.node.tcp_listener import TcpPeerListener
from dledger.node.tcp_peer import client_ssl_context, server_ssl_context
from dledger.node.tcp_transport import TcpPeerTransport
from dledger.node.transport import PeerServicer, PeerTransport
from tests.node.certs import Authority

MAX = 1 << 20
SECRET = b"a group secret of 32 bytes......"
OFFSET = 0  # the tests give the transport the listener's port itself


@dataclass
class Node:
    listener: TcpPeerListener
    port: int
    received: list[pb.PeerMessage] = field(default_factory=list)


async def start_listener(
    node_id: str = "b",
    group: str = "g",
    mode: PeerAuthMode = "none",
    secret: bytes | None = None,
    ctx: ssl.SSLContext | None = None,
) -> Node:
    received: list[pb.PeerMessage] = []
    checker = PeerServicer(group, node_id, lambda msgs: None)
    listener = TcpPeerListener(group, node_id, mode, checker.check, received.extend, max_message_bytes=MAX,
                               secret=secret, ssl_context=ctx, ack_delay=0.01, handshake_timeout=2.0)  # fmt: skip
    port = await listener.start("127.0.0.1", 0)
    return Node(listener, port, received)


def transport_to(
    node: Node,
    *,
    self_id: str = "a",
    peer_id: str = "b",
    group: str = "g",
    mode: PeerAuthMode = "none",
    secret: bytes | None = None,
    ctx: ssl.SSLContext | None = None,
    silence: float = 2.0,
) -> TcpPeerTransport:
    peers = {self_id: "127.0.0.1:1", peer_id: f"127.0.0.1:{node.port}"}
    snapshots = PeerTransport(self_id, peers, max_message_bytes=MAX)
    return TcpPeerTransport(group, self_id, peers, snapshots, mode=mode, secret=secret, max_message_bytes=MAX,
                            port_offset=OFFSET, silence_timeout=silence, ssl_context=ctx)  # fmt: skip


def msg(frm: str, to: str, term: int, group: str = "g") -> pb.PeerMessage:
    m = pb.PeerMessage(group=group, from_id=frm, to_id=to)
    m.append_entries.term = term
    return m


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


async def keep_sending(t: TcpPeerTransport, to: str, m: pb.PeerMessage, done: Callable[[], bool]) -> None:
    """Send `m` every 20 ms (as heartbeats would) until `done`: a lane that failed to dial drops its outbox
    and dials again only with something new to send."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not done():
        assert loop.time() < deadline, "condition not met before the deadline"
        t.send(to, [m])
        await asyncio.sleep(0.02)


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["none", "secret"])
def test_messages_arrive_in_order_and_the_link_is_connected(mode: PeerAuthMode) -> None:
    secret = SECRET if mode == "secret" else None

    async def main() -> None:
        b = await start_listener(mode=mode, secret=secret)
        t = transport_to(b, mode=mode, secret=secret)
        t.start()
        try:
            for term in range(1, 301):
                t.send("b", [msg("a", "b", term)])
            await wait_for(lambda: len(b.received) == 300)
            assert [m.append_entries.term for m in b.received] == list(range(1, 301))
            assert t.connected("b")
            t.send("b", [msg("a", "b", 301).SerializeToString()])  # serialized messages go as they are
            await wait_for(lambda: len(b.received) == 301)
        finally:
            await t.close()
            await b.listener.close()

    run(main)


@pytest.mark.parametrize(
    ("dialler", "listener", "reason"),
    [
        ({"group": "other"}, {}, "a dialler of group 'other' reached group 'g'"),
        ({"peer_id": "c"}, {}, "a dialler for 'c' reached 'b'"),
        ({"mode": "secret", "secret": b"another secret of 32 bytes....."}, {"mode": "secret", "secret": SECRET},
         "did not prove the group secret"),
        ({}, {"mode": "secret", "secret": SECRET}, "without the secret handshake"),
        ({"mode": "secret", "secret": SECRET}, {}, "runs without a peer secret"),
    ],
)  # fmt: skip
def test_a_wrong_peer_is_refused_with_a_logged_reason(
    dialler: dict[str, object], listener: dict[str, object], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        b = await start_listener(**listener)  # type: ignore[arg-type]
        peer_id = str(dialler.get("peer_id", "b"))
        t = transport_to(b, **dialler)  # type: ignore[arg-type]
        t.start()
        try:
            message = msg(str(dialler.get("self_id", "a")), peer_id, 1, str(dialler.get("group", "g")))
            await keep_sending(t, peer_id, message, lambda: t.stats["handshake_refused"] >= 2)  # refused twice
            assert b.received == []
            assert not t.connected(peer_id)
            assert b.listener.refused >= 2
        finally:
            await t.close()
            await b.listener.close()

    with caplog.at_level(logging.INFO):
        run(main)
    refusals = [r.getMessage() for r in caplog.records if r.name == "dledger.node.tcp_listener"]
    assert refusals and all(reason in line for line in refusals), refusals
    dialler_side = [r.getMessage() for r in caplog.records if r.name == "dledger.node.tcp_transport"]
    assert len(dialler_side) == 1, dialler_side  # once per distinct reason, not once per retry


def _tls_pair(tmp_path: pathlib.Path, authority: Authority, node_id: str) -> TlsConfig:
    issued = authority.issue(tmp_path, f"{node_id}-{authority.name}", uris=[f"dledger://g/{node_id}"])
    return TlsConfig(ca=authority.cert, cert=issued.cert, key=issued.key)


def test_mutual_tls_names_the_sender_and_refuses_another_ca(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, rogue = Authority.create(tmp_path, "ca"), Authority.create(tmp_path, "rogue")
    b_tls = _tls_pair(tmp_path, ca, "b")
    a_tls = _tls_pair(tmp_path, ca, "a")
    c_tls = _tls_pair(tmp_path, ca, "c")  # of our CA, but its certificate names c, not a
    mallory = _tls_pair(tmp_path, rogue, "a")  # claims to be a, with another CA's certificate
    # a client certificate of our CA without a node URI cannot speak as a peer
    client = ca.issue(tmp_path, "client")
    client_tls = TlsConfig(ca=ca.cert, cert=client.cert, key=client.key)

    async def main() -> None:
        b = await start_listener(mode="tls", ctx=server_ssl_context(b_tls))
        good = transport_to(b, mode="tls", ctx=client_ssl_context(a_tls))
        bad = [transport_to(b, mode="tls", ctx=client_ssl_context(t)) for t in (mallory, c_tls, client_tls)]
        for t in (good, *bad):
            t.start()
        try:
            good.send("b", [msg("a", "b", 7)])
            for t in bad:
                await keep_sending(t, "b", msg("a", "b", 8), lambda t=t: t.stats["handshake_refused"] >= 2)
            await wait_for(lambda: len(b.received) == 1)
            assert [m.append_entries.term for m in b.received] == [7]
            assert good.connected("b") and not any(t.connected("b") for t in bad)
        finally:
            for t in (good, *bad):
                await t.close()
            await b.listener.close()

    with caplog.at_level(logging.INFO):
        run(main)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "whose certificate names 'c'" in text
    assert "names no single node of group 'g'" in text


def test_malformed_input_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        b = await start_listener()
        t = transport_to(b)
        t.start()
        loop = asyncio.get_running_loop()
        try:
            for garbage in (b"GET / HTTP/1.1\r\n\r\n", LENGTH.pack(MAX + 100), b"\x00\x00\x00\x02\x09\x01",
                            encode(FrameType.BATCH, b"\x0a\x05ab")):  # fmt: skip
                with socket.create_connection(("127.0.0.1", b.port)) as raw:
                    raw.setblocking(False)
                    if garbage.startswith(b"\x00\x00\x00\x06\x01\x05"):  # a batch before any handshake
                        pass
                    await loop.sock_sendall(raw, garbage)
                    data = await asyncio.wait_for(loop.sock_recv(raw, 1024), 10)
                    while data:  # a REFUSE frame may come first; then the listener closes
                        data = await asyncio.wait_for(loop.sock_recv(raw, 1024), 10)
            t.send("b", [msg("a", "b", 1)])
            await wait_for(lambda: len(b.received) == 1)  # the listener still serves
        finally:
            await t.close()
            await b.listener.close()

    with caplog.at_level(logging.WARNING):
        run(main)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "outside the allowed" in text and "version 9" in text and "BATCH frame before HELLO" in text


def test_a_forged_or_undecodable_batch_closes_the_connection_and_changes_nothing() -> None:
    async def main() -> None:
        b = await start_listener()
        t = transport_to(b)
        t.start()
        try:
            t.send("b", [msg("c", "b", 1)])  # from c on a connection that said HELLO as a
            await wait_for(lambda: t.stats["connection_lost"] >= 1)
            t.send("b", [b"\xff\xff\xff"])  # not a PeerMessage
            await wait_for(lambda: t.stats["connection_lost"] >= 2)
            assert b.received == []
            t.send("b", [msg("a", "b", 2)])
            await wait_for(lambda: len(b.received) == 1)
        finally:
            await t.close()
            await b.listener.close()

    run(main)


def test_a_silent_peer_is_detected_and_redialled() -> None:
    """A listener that accepts and welcomes but never answers again (a paused process, a black hole)."""

    async def main() -> None:
        accepted: list[int] = []

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(1)
            await reader.readexactly(4 + 2 + 6)  # the HELLO of a to b in group g
            writer.write(encode(FrameType.WELCOME))
            while await reader.read(65536):
                pass
            writer.close()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        node = Node(listener=None, port=port)  # type: ignore[arg-type]
        t = transport_to(node, silence=0.2)
        t.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while t.stats["silent_redial"] < 2 or len(accepted) < 3:  # heartbeats keep something to send
                assert loop.time() < deadline, "the silent connection was not redialled"
                t.send("b", [msg("a", "b", 1)])
                await asyncio.sleep(0.04)
            await asyncio.sleep(0.3)  # the redial in flight, if any, connects
            idle = len(accepted)
            await asyncio.sleep(0.6)  # nothing more to send: the lane does not dial again
            assert len(accepted) == idle
        finally:
            await t.close()
            server.close()

    run(main)
