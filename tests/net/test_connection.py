"""FrameConnection over real loopback sockets, on asyncio's loop and on uvloop: frames in order, one
writelines per batch, malformed input closes only that connection (one logged line), back-pressure."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Awaitable, Callable

import pytest

from dledger.net.connection import FrameConnection
from dledger.net.peer_frames import Frame, FrameType, PeerFrameDecoder, encode

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="no uvloop"))]


def run(loop_name: str, main: Callable[[], Awaitable[None]]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


class Server:
    def __init__(self) -> None:
        self.received: list[tuple[int, FrameType, bytes]] = []  # (connection number, kind, body)
        self.conns: list[FrameConnection[Frame]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    def protocol(self) -> FrameConnection[Frame]:
        number = len(self.conns)

        def on_frames(conn: FrameConnection[Frame], frames: list[Frame]) -> None:
            self.received.extend((number, f.kind, bytes(f.body)) for f in frames)

        conn: FrameConnection[Frame] = FrameConnection(PeerFrameDecoder(4096), on_frames, name="test")
        self.conns.append(conn)
        return conn

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(self.protocol, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for c in self.conns:
            c.abort()


async def dial(port: int, **kwargs: object) -> FrameConnection[Frame]:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: FrameConnection(PeerFrameDecoder(4096), lambda c, f: None, name="client", **kwargs),  # type: ignore[arg-type]
        "127.0.0.1",
        port,
    )
    return conn


@pytest.mark.parametrize("loop_name", LOOPS)
def test_frames_of_one_writelines_arrive_in_order(loop_name: str) -> None:
    async def main() -> None:
        server = Server()
        await server.start()
        conn = await dial(server.port)
        conn.write([encode(FrameType.AUTH, bytes([i]) * i) for i in range(200)])
        await wait_for(lambda: len(server.received) == 200)
        assert [body for _, _, body in server.received] == [bytes([i]) * i for i in range(200)]
        conn.close()
        await asyncio.wait_for(conn.closed, 5)
        assert not conn.is_open
        conn.write([encode(FrameType.ACK)])  # a closed connection swallows writes
        await server.close()

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x00\x00\x00\x02\x07\x06", "version 7"),
        (b"\xff\xff\xff\xff", "outside the allowed"),
        (b"\x00\x00\x00\x02\x01\x63", "unknown type 99"),
    ],
)
def test_a_malformed_frame_closes_that_connection_only(
    loop_name: str, garbage: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        server = Server()
        await server.start()
        good, bad = await dial(server.port), await dial(server.port)
        await wait_for(lambda: len(server.conns) == 2)
        bad.write([encode(FrameType.ACK), garbage, encode(FrameType.ACK)])
        await asyncio.wait_for(bad.closed, 10)
        good.write([encode(FrameType.ACK)])
        await wait_for(lambda: sum(1 for n, _, _ in server.received if n == 0) == 1)
        assert [n for n, _, _ in server.received].count(1) <= 1  # none after the garbage
        assert good.is_open
        await server.close()

    with caplog.at_level(logging.WARNING, logger="dledger.net.connection"):
        run(loop_name, main)
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0], lines


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_reader_that_stops_pauses_the_writer_and_resuming_says_so(loop_name: str) -> None:
    async def main() -> None:
        server = Server()
        await server.start()
        resumed = asyncio.Event()
        conn = await dial(server.port, on_writable=resumed.set)
        await wait_for(lambda: len(server.conns) == 1)
        far = server.conns[0]
        assert far.transport is not None
        far.transport.pause_reading()
        frame = encode(FrameType.AUTH, b"x" * 4000)
        for _ in range(100_000):  # the kernel's buffers fill, then the transport's past its high-water mark
            if not conn.writable:
                break
            conn.write([frame] * 16)
            await asyncio.sleep(0)
        assert not conn.writable
        far.transport.resume_reading()
        await asyncio.wait_for(resumed.wait(), 30)
        assert conn.writable
        await server.close()

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_offloaded_and_direct_writes_keep_their_order(loop_name: str) -> None:
    """Big writes go through the write thread, small ones straight to the transport when the thread is
    idle: the far end still sees every frame in the order written."""

    async def main() -> None:
        server = Server()
        await server.start()
        conn = await dial(server.port)
        assert conn.offload_writes(1000)
        assert conn.write_thread is not None
        sent = []
        for i in range(300):
            body = bytes([i % 251]) * (3000 if i % 3 == 0 else 10)  # big ones offloaded, small ones direct
            sent.append(body)
            conn.write([encode(FrameType.AUTH, body)])
            if i % 7 == 0:
                await asyncio.sleep(0)
        await wait_for(lambda: len(server.received) == 300)
        assert [body for _, _, body in server.received] == sent
        assert conn.write_thread.pending == 0
        conn.abort()
        await asyncio.wait_for(conn.closed, 5)
        conn.write_thread.join(5)
        await server.close()

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_write_thread_pauses_the_writer_and_resumes_it(loop_name: str) -> None:
    async def main() -> None:
        server = Server()
        await server.start()
        resumed = asyncio.Event()
        conn = await dial(server.port, on_writable=resumed.set)
        assert conn.offload_writes(1)
        await wait_for(lambda: len(server.conns) == 1)
        far = server.conns[0]
        assert far.transport is not None
        far.transport.pause_reading()
        frame = encode(FrameType.AUTH, b"x" * 4000)
        for _ in range(100_000):  # the kernel's buffers fill, then the thread's queue past its high-water mark
            if not conn.writable:
                break
            conn.write([frame] * 16)
            await asyncio.sleep(0)
        assert not conn.writable
        assert conn.write_thread is not None and conn.write_thread.above_high_water
        far.transport.resume_reading()
        await asyncio.wait_for(resumed.wait(), 30)
        assert conn.writable
        conn.abort()
        conn.write_thread.join(5)
        await server.close()

    run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_write_thread_blocked_on_a_gone_peer_ends_with_the_connection(loop_name: str) -> None:
    """The far end stops reading and then goes away: the blocked thread gives up, the connection closes,
    and the thread's descriptor is released."""

    async def main() -> None:
        server = Server()
        await server.start()
        conn = await dial(server.port)
        assert conn.offload_writes(1)
        await wait_for(lambda: len(server.conns) == 1)
        far = server.conns[0]
        assert far.transport is not None
        far.transport.pause_reading()
        frame = encode(FrameType.AUTH, b"x" * 4000)
        while conn.writable:
            conn.write([frame] * 16)
            await asyncio.sleep(0)
        writer = conn.write_thread
        assert writer is not None
        far.abort()
        await asyncio.wait_for(conn.closed, 10)
        writer.join(5)
        assert not writer.alive
        conn.write([frame])  # a closed connection swallows writes, offloaded or not
        await server.close()

    run(loop_name, main)


def test_tls_connections_keep_their_writes_on_the_loop() -> None:
    class FakeTransport:
        def get_extra_info(self, name: str) -> object:
            return {"socket": object(), "sslcontext": object()}.get(name)

        def is_closing(self) -> bool:
            return False

    async def main() -> None:
        conn: FrameConnection[Frame] = FrameConnection(PeerFrameDecoder(4096), lambda c, f: None)
        conn.transport = FakeTransport()  # type: ignore[assignment]
        assert not conn.offload_writes(1)
        assert conn.write_thread is None

    asyncio.run(main())
