"""An asyncio remoting transport: `RemotingConnection` (one TCP connection, either end), `RemotingServer`
(accepts connections) and `connect` / `invoke` (the client side).

Both ends of a remoting connection may send requests (a broker calls back producers with
CHECK_TRANSACTION_STATE), so one class serves both: requests that arrive go to the `handler`; responses
that arrive settle the pending request with the same opaque.

Invariants:
- A malformed or oversize frame closes the connection after one warning line naming the peer; nothing is
  raised into the event loop and no traceback is logged.
- Every request sent with `request` settles exactly once: with the response of the same opaque, with
  `RemotingTimeoutError`, or with `RemotingConnectionError` when the connection is lost first.
- A handler's exception answers SYSTEM_ERROR with a one-line remark (and is logged once); a handler that
  returns None for a two-way request answers nothing (the request times out at the caller, as in RocketMQ
  when a processor returns null); oneway requests are never answered.
- Opaques this end assigns count up from 1 per connection and skip values still pending.
- Commands written in one turn of the event loop leave in one `write`, in the order they were sent, at the
  end of that turn (so answers completed together cost one system call); `close` writes them first.
- A connection stops reading while `max_inflight` of its requests are being handled or while its peer does
  not read what it is sent (the transport's write buffer is full), so one client cannot grow this process's
  memory without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

from dledger.rocketmq.remoting.codec import DEFAULT_MAX_FRAME, CommandDecoder, encode_command
from dledger.rocketmq.remoting.codes import FLAG_ONEWAY, FLAG_RESPONSE, ResponseCode, code_name
from dledger.rocketmq.remoting.command import INT32_MAX, RemotingCommand
from dledger.rocketmq.remoting.errors import RemotingCodecError, RemotingConnectionError, RemotingTimeoutError

__all__ = ["DEFAULT_MAX_INFLIGHT", "RemotingConnection", "RemotingServer", "RequestHandler", "connect", "invoke"]

log = logging.getLogger("dledger.rocketmq.remoting")

#: requests handled at once on one connection before it stops reading
DEFAULT_MAX_INFLIGHT = 1024

RequestHandler = Callable[[RemotingCommand, "RemotingConnection"], Awaitable[RemotingCommand | None]]


class RemotingConnection(asyncio.Protocol):
    """One remoting connection; `request`, `send_oneway`, `close`; incoming requests go to `handler`."""

    def __init__(
        self,
        handler: RequestHandler | None = None,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
    ) -> None:
        """`max_inflight`: requests being handled at once on this connection before reading pauses."""
        self.handler = handler
        self.max_inflight = max_inflight
        self._paused_for: set[str] = set()
        self._backlog: deque[RemotingCommand] = deque()
        self._decoder = CommandDecoder(max_frame)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[RemotingCommand]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._opaques = itertools.count(1)
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        self.peer = "?"
        self.on_lost: Callable[[RemotingConnection], None] | None = None

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport's interface without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        try:
            commands = self._decoder.feed(data)
        except RemotingCodecError as exc:
            log.warning("remoting: closing the connection from %s: %s", self.peer, exc)
            self.close()
            return
        for cmd in commands:
            if cmd.is_response:
                future = self._pending.pop(cmd.opaque, None)
                if future is not None and not future.done():
                    future.set_result(cmd)
                else:
                    log.debug("remoting: a response from %s for no pending request (opaque %d)", self.peer, cmd.opaque)
            elif self.handler is not None:
                self._backlog.append(cmd)
            elif not cmd.is_oneway:
                self.send(cmd.response_to(ResponseCode.REQUEST_CODE_NOT_SUPPORTED, "this end serves no requests"))
        self._dispatch()

    def _dispatch(self) -> None:
        """Start handling backlogged requests up to `max_inflight`; reading pauses while some must wait."""
        while self._backlog and len(self._tasks) < self.max_inflight:
            task = asyncio.get_running_loop().create_task(self._handle(self._backlog.popleft()))
            self._tasks.add(task)
            task.add_done_callback(self._handled)
        if self._backlog:
            self._pause("inflight")
        else:
            self._resume("inflight")

    # ---- backpressure: stop reading while the peer does not read our answers or too much is in flight ----
    def pause_writing(self) -> None:
        self._pause("writing")

    def resume_writing(self) -> None:
        self._resume("writing")

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._transport is not None:
            self._dispatch()

    def _pause(self, why: str) -> None:
        if not self._paused_for and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._paused_for.add(why)

    def _resume(self, why: str) -> None:
        if why not in self._paused_for:
            return
        self._paused_for.discard(why)
        if not self._paused_for and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._out.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RemotingConnectionError(f"the connection to {self.peer} was lost"))
        self._pending.clear()
        self._backlog.clear()
        for task in self._tasks:
            task.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    # ---- handling ----
    async def _handle(self, cmd: RemotingCommand) -> None:
        assert self.handler is not None
        try:
            response = await self.handler(cmd, self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("remoting: %s from %s failed: %s: %s", code_name(cmd.code), self.peer, type(exc).__name__, exc)
            response = cmd.response_to(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}".splitlines()[0])
        if response is None or cmd.is_oneway:
            return
        if response.opaque != cmd.opaque or not response.is_response:
            response = RemotingCommand(
                response.code,
                language=response.language,
                version=response.version,
                opaque=cmd.opaque,
                flag=(response.flag | FLAG_RESPONSE) & ~FLAG_ONEWAY,
                remark=response.remark,
                ext_fields=response.ext_fields,
                body=response.body,
                serialize_type=response.serialize_type,
            )
        self.send(response)

    # ---- sending ----
    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, cmd: RemotingCommand) -> None:
        """Write one command as it is (no opaque assigned) at the end of this turn of the event loop; dropped
        when the connection is closed."""
        if self.is_open:
            if not self._out:
                self._loop.call_soon(self._write_out)
            self._out.append(encode_command(cmd))

    def _write_out(self) -> None:
        out, self._out = self._out, []
        if out and self.is_open:
            assert self._transport is not None
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _next_opaque(self) -> int:
        while True:
            opaque = next(self._opaques)
            if opaque > INT32_MAX:
                self._opaques = itertools.count(1)
                continue
            if opaque not in self._pending:
                return opaque

    async def request(self, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
        """Send a two-way request (opaque assigned here when 0) and wait for its response."""
        if not self.is_open:
            raise RemotingConnectionError(f"the connection to {self.peer} is closed")
        if cmd.opaque == 0 or cmd.opaque in self._pending:
            cmd = cmd.with_opaque(self._next_opaque())
        future: asyncio.Future[RemotingCommand] = asyncio.get_running_loop().create_future()
        self._pending[cmd.opaque] = future
        self.send(cmd)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RemotingTimeoutError(
                f"no response from {self.peer} to {code_name(cmd.code)} within {timeout:g} s"
            ) from None
        finally:
            if self._pending.get(cmd.opaque) is future:
                del self._pending[cmd.opaque]

    def send_oneway(self, cmd: RemotingCommand) -> None:
        """Send a request that expects no response (the oneway flag set, an opaque assigned when 0)."""
        if cmd.opaque == 0:
            cmd = cmd.with_opaque(self._next_opaque())
        if not cmd.is_oneway:
            cmd = RemotingCommand(
                cmd.code,
                language=cmd.language,
                version=cmd.version,
                opaque=cmd.opaque,
                flag=cmd.flag | FLAG_ONEWAY,
                remark=cmd.remark,
                ext_fields=cmd.ext_fields,
                body=cmd.body,
                serialize_type=cmd.serialize_type,
            )
        self.send(cmd)

    def close(self) -> None:
        if self._transport is not None:
            self._write_out()
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


class RemotingServer:
    """Accepts remoting connections and hands their requests to one handler."""

    def __init__(
        self,
        handler: RequestHandler,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        on_connection_lost: Callable[[RemotingConnection], None] | None = None,
    ) -> None:
        """`on_connection_lost`: called once for each accepted connection when it closes."""
        self.handler = handler
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self.on_connection_lost = on_connection_lost
        self.connections: set[RemotingConnection] = set()
        self._server: asyncio.Server | None = None

    def _protocol(self) -> RemotingConnection:
        conn = RemotingConnection(self.handler, max_frame=self.max_frame, max_inflight=self.max_inflight)
        self.connections.add(conn)
        conn.on_lost = self._lost
        return conn

    def _lost(self, conn: RemotingConnection) -> None:
        self.connections.discard(conn)
        if self.on_connection_lost is not None:
            self.on_connection_lost(conn)

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0: one the system picks, see `port`); OSError when it cannot."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host or None, port, reuse_address=True)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        for conn in list(self.connections):
            await conn.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


async def connect(
    address: str,
    handler: RequestHandler | None = None,
    *,
    timeout: float = 3.0,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> RemotingConnection:
    """A connection to `host:port`; `RemotingConnectionError` (one line) when it cannot be made."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RemotingConnectionError(f"{address!r} is not host:port")
    loop = asyncio.get_running_loop()
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: RemotingConnection(handler, max_frame=max_frame), host, int(port_text)),
            timeout,
        )
    except TimeoutError:
        raise RemotingConnectionError(f"connecting to {address} timed out after {timeout:g} s") from None
    except OSError as exc:
        raise RemotingConnectionError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    return conn


async def invoke(address: str, cmd: RemotingCommand, timeout: float = 3.0) -> RemotingCommand:
    """One request on a fresh connection, closed after the response."""
    conn = await connect(address, timeout=timeout)
    try:
        return await conn.request(cmd, timeout)
    finally:
        conn.close()
