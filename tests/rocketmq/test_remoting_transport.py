"""The asyncio remoting transport through real sockets: opaque matching, oneway, handler failures, and
malformed frames that close one connection with one log line while the server goes on serving."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from dledger.rocketmq.remoting import (
    CommandDecoder,
    RemotingCommand,
    RemotingConnection,
    RemotingConnectionError,
    RemotingServer,
    RemotingTimeoutError,
    RequestCode,
    ResponseCode,
    SerializeType,
    connect,
    encode_command,
    invoke,
)


class Echo:
    """Answers after the delay named in the `delay` field; records oneway requests; `boom` raises."""

    def __init__(self) -> None:
        self.oneway: list[RemotingCommand] = []

    async def __call__(self, cmd: RemotingCommand, conn: RemotingConnection) -> RemotingCommand | None:
        if cmd.is_oneway:
            self.oneway.append(cmd)
            return None
        if cmd.ext("boom"):
            raise RuntimeError("handler failed\nsecond line")
        if cmd.ext("silent"):
            return None
        await asyncio.sleep(float(cmd.ext("delay", "0") or 0))
        return cmd.response_to(ResponseCode.SUCCESS, ext_fields={"echo": cmd.ext("v", "")}, body=cmd.body)


async def _server(handler: Echo) -> tuple[RemotingServer, str]:
    server = RemotingServer(handler)
    await server.start("127.0.0.1", 0)
    return server, f"127.0.0.1:{server.port}"


def run(coro: object, loop: str = "asyncio") -> None:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)  # type: ignore[arg-type]
    else:
        asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_concurrent_requests_match_by_opaque(loop: str) -> None:
    async def main() -> None:
        server, addr = await _server(Echo())
        conn = await connect(addr)
        try:
            reqs = [
                RemotingCommand.request(RequestCode.HEART_BEAT, {"v": str(i), "delay": str(0.2 - i * 0.04)})
                for i in range(5)
            ]
            answers = await asyncio.gather(*(conn.request(r, timeout=10) for r in reqs))
            assert [a.ext("echo") for a in answers] == ["0", "1", "2", "3", "4"]
            assert len({a.opaque for a in answers}) == 5 and all(a.is_response for a in answers)
            rocketmq = RemotingCommand.request(
                RequestCode.HEART_BEAT, {"v": "x"}, b"body", serialize_type=SerializeType.ROCKETMQ
            )
            answer = await conn.request(rocketmq, timeout=10)
            assert answer.serialize_type == SerializeType.ROCKETMQ and answer.body == b"body"
        finally:
            conn.close()
            await server.close()

    run(main(), loop)


def test_oneway_is_not_answered_and_handler_errors_answer_system_error() -> None:
    async def main() -> None:
        echo = Echo()
        server, addr = await _server(echo)
        conn = await connect(addr)
        try:
            conn.send_oneway(RemotingCommand.request(RequestCode.UNREGISTER_CLIENT, {"v": "1"}))
            failed = await conn.request(RemotingCommand.request(RequestCode.HEART_BEAT, {"boom": "1"}), timeout=10)
            assert failed.code == ResponseCode.SYSTEM_ERROR and failed.remark == "RuntimeError: handler failed"
            assert [c.ext("v") for c in echo.oneway] == ["1"] and echo.oneway[0].is_oneway
            with pytest.raises(RemotingTimeoutError, match="HEART_BEAT"):
                await conn.request(RemotingCommand.request(RequestCode.HEART_BEAT, {"silent": "1"}), timeout=0.3)
        finally:
            conn.close()
            await server.close()

    run(main())


def test_malformed_frame_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server, addr = await _server(Echo())
        host, port = addr.split(":")
        try:
            for garbage in (
                b"\xff\xff\xff\xff",
                struct.pack(">II", 6, 0x07000002) + b"{}",
                b"\x00\x00\x00\x05\x00\x00\x00\x01{",
            ):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(garbage)
                await writer.drain()
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server, nothing sent
                writer.close()
            ok = await invoke(addr, RemotingCommand.request(RequestCode.HEART_BEAT, {"v": "still"}), timeout=10)
            assert ok.ext("echo") == "still"
        finally:
            await server.close()

    with caplog.at_level(logging.WARNING, logger="dledger.rocketmq.remoting"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "closing the connection" in r.getMessage()]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert not any(r.exc_info for r in caplog.records)


def test_lost_connection_fails_pending_requests_and_bad_addresses_are_one_line() -> None:
    async def main() -> None:
        server, addr = await _server(Echo())
        conn = await connect(addr)
        pending = asyncio.ensure_future(
            conn.request(RemotingCommand.request(RequestCode.HEART_BEAT, {"delay": "30"}), timeout=60)
        )
        await asyncio.sleep(0.1)
        await server.close()
        with pytest.raises(RemotingConnectionError, match="lost"):
            await pending
        with pytest.raises(RemotingConnectionError, match="not host:port"):
            await connect("nowhere")
        with pytest.raises(RemotingConnectionError, match="cannot connect"):
            await connect(addr)

    run(main())


def test_a_connection_handles_at_most_max_inflight_requests_at_once() -> None:
    async def main() -> None:
        running = peak = 0

        async def slow(cmd: RemotingCommand, conn: RemotingConnection) -> RemotingCommand:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            return cmd.response_to(ResponseCode.SUCCESS)

        server = RemotingServer(slow, max_inflight=4)
        await server.start("127.0.0.1", 0)
        conn = await connect(f"127.0.0.1:{server.port}")
        try:
            answers = await asyncio.gather(
                *(conn.request(RemotingCommand.request(RequestCode.HEART_BEAT), timeout=30) for _ in range(60))
            )
            assert all(a.code == ResponseCode.SUCCESS for a in answers)
            assert peak == 4
        finally:
            conn.close()
            await server.close()

    run(main())


class RecordingTransport(asyncio.Transport):
    """A transport that keeps every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_answers_completed_in_one_turn_leave_in_one_write_in_order() -> None:
    async def main() -> None:
        async def answer(cmd: RemotingCommand, conn: RemotingConnection) -> RemotingCommand:
            return cmd.response_to(ResponseCode.SUCCESS, ext_fields={"n": cmd.ext("n", "")})

        conn = RemotingConnection(answer)
        transport = RecordingTransport()
        conn.connection_made(transport)
        requests = [RemotingCommand.request(RequestCode.HEART_BEAT, {"n": str(i)}, opaque=i + 1) for i in range(10)]
        conn.data_received(b"".join(encode_command(r) for r in requests))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(transport.writes) == 1
        answers = CommandDecoder().feed(transport.writes[0])
        assert [(a.opaque, a.ext("n"), a.is_response) for a in answers] == [(i + 1, str(i), True) for i in range(10)]

    run(main())


def test_close_writes_what_was_sent_first_and_a_closed_connection_writes_nothing() -> None:
    async def main() -> None:
        conn = RemotingConnection(None)
        transport = RecordingTransport()
        conn.connection_made(transport)
        conn.send_oneway(RemotingCommand.request(RequestCode.HEART_BEAT, {"k": "1"}))
        conn.send_oneway(RemotingCommand.request(RequestCode.HEART_BEAT, {"k": "2"}))
        assert transport.writes == []  # not yet: at the end of this turn
        conn.close()
        assert [c.ext("k") for c in CommandDecoder().feed(b"".join(transport.writes))] == ["1", "2"]
        conn.connection_lost(None)
        conn.send_oneway(RemotingCommand.request(RequestCode.HEART_BEAT, {"k": "3"}))
        await asyncio.sleep(0)
        assert len(transport.writes) == 1

    run(main())
