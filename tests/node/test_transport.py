"""Peer transport over real gRPC on loopback: delivery, batching, refusal of outsiders, reconnection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.node.transport import PeerServicer, PeerTransport, server_options
from tests.support import wait_for_async

MAX = 1 << 20


@dataclass
class Endpoint:
    node_id: str
    server: grpc.aio.Server
    port: int
    servicer: PeerServicer
    received: list[pb.PeerMessage] = field(default_factory=list)


async def start_endpoint(node_id: str, group: str = "g", port: int = 0) -> Endpoint:
    received: list[pb.PeerMessage] = []
    servicer = PeerServicer(group, node_id, lambda msgs: received.extend(msgs))
    server = grpc.aio.server(options=server_options(MAX))
    pb_grpc.add_RaftPeerServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return Endpoint(node_id, server, bound, servicer, received)


def msg(frm: str, to: str, term: int, group: str = "g") -> pb.PeerMessage:
    m = pb.PeerMessage(group=group, from_id=frm, to_id=to)
    m.append_entries.term = term
    return m


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


@pytest.fixture
def pair() -> Callable[[Callable[[Endpoint, PeerTransport], Awaitable[None]]], None]:
    def runner(body: Callable[[Endpoint, PeerTransport], Awaitable[None]]) -> None:
        async def main() -> None:
            b = await start_endpoint("b")
            transport = PeerTransport("a", {"a": "127.0.0.1:1", "b": f"127.0.0.1:{b.port}"}, max_message_bytes=MAX)
            transport.start()
            try:
                await body(b, transport)
            finally:
                await transport.close()
                await b.server.stop(None)

        asyncio.run(main())

    return runner


def test_messages_arrive_in_order(pair: Callable[..., None]) -> None:
    async def body(b: Endpoint, transport: PeerTransport) -> None:
        for term in range(1, 201):
            transport.send("b", [msg("a", "b", term)])
        await wait_for_async(lambda: len(b.received) == 200)
        assert [m.append_entries.term for m in b.received] == list(range(1, 201))
        # the link marks itself connected when gRPC resumes it after the write, which may be after delivery
        await wait_for_async(lambda: transport.connected("b"))

    pair(body)


def test_unknown_destination_is_counted_not_raised(pair: Callable[..., None]) -> None:
    async def body(b: Endpoint, transport: PeerTransport) -> None:
        transport.send("zz", [msg("a", "zz", 1)])
        assert transport.stats["dropped_unknown_peer"] == 1

    pair(body)


async def _raw_stream(port: int, batches: list[pb.PeerBatch]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RaftPeerStub(channel)

        async def gen() -> AsyncIterator[pb.PeerBatch]:
            for batch in batches:
                yield batch

        try:
            await stub.Stream(gen(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (msg("a", "b", 1, group="other"), "message"),
        (msg("b", "b", 1), "message"),  # from itself (a sender outside the configuration is let through)
        (msg("a", "c", 1), "message"),
        (pb.PeerMessage(group="g", from_id="a", to_id="b"), "message"),
    ],
)
def test_outsiders_are_refused_and_change_nothing(bad: pb.PeerMessage, reason: str) -> None:
    async def main() -> None:
        b = await start_endpoint("b")
        try:
            batch = pb.PeerBatch(messages=[msg("a", "b", 7), bad])
            code = await _raw_stream(b.port, [batch])
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert b.received == []  # the good message of a refused batch is not delivered either
            assert b.servicer.rejected[reason] == 1
            assert await _raw_stream(b.port, [pb.PeerBatch(messages=[msg("a", "b", 8)])]) == grpc.StatusCode.OK
            assert [m.append_entries.term for m in b.received] == [8]
        finally:
            await b.server.stop(None)

    run(main)


@pytest.mark.parametrize(
    ("group", "from_id", "to_id", "reason"),
    [
        ("other", "a", "b", "snapshot for group 'other', this is group 'g'"),
        ("g", "b", "b", "snapshot from 'b' to itself"),
        ("g", "a", "c", "snapshot for 'c' reached 'b'"),
    ],
)
def test_misrouted_snapshot_chunks_are_refused_before_the_node_sees_them(
    group: str, from_id: str, to_id: str, reason: str
) -> None:
    """SendSnapshotChunk checks the same envelope as Stream: a chunk that fails never reaches the node; a
    sender outside the configuration gets through (module docstring)."""

    async def main() -> None:
        seen: list[pb.SnapshotChunk] = []

        async def on_chunk(chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
            seen.append(chunk)
            return pb.SnapshotAck(ok=True)

        server = grpc.aio.server(options=server_options(MAX))
        pb_grpc.add_RaftPeerServicer_to_server(PeerServicer("g", "b", lambda msgs: None, on_chunk), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RaftPeerStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.SendSnapshotChunk(pb.SnapshotChunk(group=group, from_id=from_id, to_id=to_id), timeout=5)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert refused.value.details() == reason
                assert seen == []
                ack = await stub.SendSnapshotChunk(pb.SnapshotChunk(group="g", from_id="z", to_id="b"), timeout=5)
                assert ack.ok and [c.from_id for c in seen] == ["z"]
        finally:
            await server.stop(None)

    run(main)


def test_oversized_batch_is_refused() -> None:
    async def main() -> None:
        b = await start_endpoint("b")
        try:
            big = msg("a", "b", 1)
            big.append_entries.entry_data = b"x" * (MAX + 10)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pb_grpc.RaftPeerStub(channel).Send(pb.PeerBatch(messages=[big]), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert b.received == []
        finally:
            await b.server.stop(None)

    run(main)


def test_an_outbox_larger_than_a_message_goes_as_several_batches_in_order() -> None:
    """Messages that each fit the peer's limit but not together (a follower's pipeline of AppendEntries while
    the stream was slow) are split into batches the peer accepts; one batch of all of them would be refused
    and every message in it lost."""

    async def main() -> None:
        b = await start_endpoint("b")
        transport = PeerTransport("a", {"b": f"127.0.0.1:{b.port}"}, max_message_bytes=MAX)
        try:
            messages = []
            for term in range(1, 11):
                m = msg("a", "b", term)
                m.append_entries.entry_data = bytes([term]) * (MAX // 4)
                messages.append(m)
            transport.send("b", messages)  # queued before the link starts: one outbox of 2.5x the limit
            transport.start()
            await wait_for_async(lambda: len(b.received) == 10)
            assert [m.append_entries.term for m in b.received] == list(range(1, 11))
            assert all(m.append_entries.entry_data == bytes([k + 1]) * (MAX // 4) for k, m in enumerate(b.received))
            assert transport.stats["batches_split"] >= 2 and transport.stats["batches_sent"] >= 3
        finally:
            await transport.close()
            await b.server.stop(None)

    run(main)


def test_link_reconnects_after_the_peer_restarts() -> None:
    async def main() -> None:
        b = await start_endpoint("b")
        port = b.port
        transport = PeerTransport("a", {"a": "127.0.0.1:1", "b": f"127.0.0.1:{port}"}, max_message_bytes=MAX)
        transport.start()
        try:
            transport.send("b", [msg("a", "b", 1)])
            await wait_for_async(lambda: len(b.received) == 1)
            await b.server.stop(None)
            await wait_for_async(lambda: not transport.connected("b"))
            b2 = await start_endpoint("b", port=port)
            try:

                async def delivered() -> None:
                    while not b2.received:
                        transport.send("b", [msg("a", "b", 2)])
                        await asyncio.sleep(0.02)

                await asyncio.wait_for(delivered(), 10)
                assert b2.received[0].append_entries.term == 2
            finally:
                await b2.server.stop(None)
        finally:
            await transport.close()

    run(main)


def test_outbox_is_bounded_while_the_peer_is_down() -> None:
    async def main() -> None:
        transport = PeerTransport("a", {"a": "127.0.0.1:1", "b": "127.0.0.1:9"}, max_message_bytes=MAX, max_pending=10)
        transport.start()
        try:
            transport.send("b", [msg("a", "b", t) for t in range(25)])
            assert transport.stats["dropped_stale"] + transport.stats["dropped_full"] == 15
        finally:
            await transport.close()

    run(main)


class _FailingStub:
    """Stands in for the generated stub: every stream fails at once (a peer that is down)."""

    def __init__(self) -> None:
        self.calls = 0

    async def Stream(self, batches: AsyncIterator[bytes], metadata: object = None) -> pb.PeerAck:
        self.calls += 1
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())


def test_link_redials_only_with_something_to_send_and_caps_its_backoff() -> None:
    async def main() -> None:
        from collections import Counter

        from dledger.node.transport import RETRY_MAX, RETRY_MIN, _PeerLink

        link = _PeerLink("127.0.0.1:9", [], 100, Counter())
        stub = _FailingStub()
        link._stream = stub.Stream
        delays: list[float] = []
        enough = asyncio.Event()

        async def fake_sleep(seconds: float) -> None:
            delays.append(seconds)
            if len(delays) >= 8:
                enough.set()
                await asyncio.Event().wait()  # park the link here until close()

        link._sleep = fake_sleep
        link.start()
        try:
            for _ in range(20):
                await asyncio.sleep(0)
            assert stub.calls == 0, "an idle link must not dial"
            link.push([msg("a", "b", 1)] * 3)
            await asyncio.wait_for(enough.wait(), 5)
            assert stub.calls == 8
            expected = [RETRY_MIN * 2**k for k in range(8)]
            expected = [min(d, RETRY_MAX) for d in expected]
            assert delays == pytest.approx(expected)
            assert max(delays) <= RETRY_MAX <= 0.1
            assert link.stats["stream_error_unavailable"] == 8
        finally:
            await link.close()

    run(main)


def test_membership_changes_open_and_close_links_and_the_servicer_still_hears_non_members() -> None:
    async def main() -> None:
        b = await start_endpoint("b")
        c = await start_endpoint("c")
        transport = PeerTransport("a", {"a": "", "b": f"127.0.0.1:{b.port}"}, max_message_bytes=MAX)
        transport.start()
        try:
            transport.send("c", [msg("a", "c", 1)])
            assert transport.stats["dropped_unknown_peer"] == 1  # not a member yet
            transport.set_peers({"a": "", "b": f"127.0.0.1:{b.port}", "c": f"127.0.0.1:{c.port}"})
            transport.send("c", [msg("a", "c", 2)])
            await wait_for_async(lambda: len(c.received) == 1)
            assert c.received[0].append_entries.term == 2
            transport.set_peers({"a": "", "c": f"127.0.0.1:{c.port}"})  # b removed
            transport.send("b", [msg("a", "b", 3)])
            assert transport.stats["dropped_unknown_peer"] == 2
            assert not b.received
            # the receiving side still hears a sender its configuration lacks (a leader that added members
            # this node has not heard of yet); only a message from itself is refused
            assert c.servicer.check(pb.PeerBatch(messages=[msg("a", "c", 4)])) is None
            assert c.servicer.check(pb.PeerBatch(messages=[msg("c", "c", 4)])) == "message from 'c' to itself"
        finally:
            await transport.close()
            await b.server.stop(None)
            await c.server.stop(None)

    run(main)


def test_heartbeats_do_not_wait_behind_appends_the_peer_is_slow_to_take() -> None:
    """Megabytes of entries stuck on their way to a slow follower must not hold up its heartbeats (which keep
    it from campaigning): appends with entries and everything else travel on separate streams."""

    async def main() -> None:
        from collections import Counter

        from dledger.node.codec import to_wire_parts
        from dledger.node.transport import _PeerLink
        from dledger.raft.messages import AppendEntries
        from dledger.storage_api import Entry, EntryKind

        got: list[pb.PeerMessage] = []
        stuck = asyncio.Event()

        async def stream(batches: AsyncIterator[bytes], metadata: object = None) -> pb.PeerAck:
            async for raw in batches:
                messages = list(pb.PeerBatch.FromString(raw).messages)
                if any(m.append_entries.entry_data for m in messages):
                    stuck.set()
                    await asyncio.Event().wait()  # a peer that never takes this stream's next bytes
                got.extend(messages)
            return pb.PeerAck()

        link = _PeerLink("127.0.0.1:9", [], 100, Counter())
        link._stream = stream
        link.start()
        try:
            entries = (Entry(1, 1, b"x" * 1024, EntryKind.NORMAL),)
            append = AppendEntries(term=1, from_id="a", to_id="b", group="g", entries=entries)
            link.push([to_wire_parts(append)])
            await asyncio.wait_for(stuck.wait(), 5)
            link.push([msg("a", "b", 1)])  # a heartbeat
            await wait_for_async(lambda: len(got) == 1)
            assert got[0].append_entries.term == 1 and not got[0].append_entries.entry_data
        finally:
            await link.close()

    run(main)
