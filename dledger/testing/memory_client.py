"""Clients of nodes on a `MemoryHub`, with no socket: `AsyncDLedgerClient(peers, stubs=MemoryStubs(hub))`.

`MemoryStubs` is the client's `StubSource`: each call goes to the node's `ClientServicer` (the object its
gRPC endpoint would serve), request and answer copied through their wire form, so the client's retry,
redirect and outcome rules run unchanged. A node that is not running on the hub fails a call as
UNAVAILABLE and is never "ready" (a refused connection); a call past its timeout fails as
DEADLINE_EXCEEDED (the node's handler is cancelled, as gRPC cancels it); an `AppendStream` open on a node
that stops breaks as UNAVAILABLE (a broken connection).

Invariants: the client runs on the nodes' event loop (a call from another loop raises RuntimeError);
nothing here opens a socket; the gRPC endpoint's interceptors (client authorization) are not on this path,
so tests of authorization stay on gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from dledger._proto import dledger_pb2 as pb
from dledger.node.services import ClientServicer

__all__ = ["Endpoints", "MemoryStubs"]

M = TypeVar("M", bound=Message)

UNARY = ("Append", "Get", "ReadIndex", "Status", "TransferLeadership", "ChangeMembership", "Members", "Compact")


def _copy(message: M) -> M:
    return type(message).FromString(message.SerializeToString())


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class Endpoints(Protocol):
    """What `MemoryStubs` needs of the hub (`MemoryHub.client_endpoint`)."""

    def client_endpoint(self, node_id: str) -> tuple[ClientServicer, asyncio.Event] | None: ...


class MemoryStubs:
    """A `StubSource` over `hub`, a `MemoryHub` (see the module docstring)."""

    def __init__(self, hub: Endpoints) -> None:
        self.hub = hub

    def stub(self, node_id: str, address: str) -> _NodeStub:
        return _NodeStub(self, node_id)

    async def ready(self, node_id: str, timeout: float) -> bool:
        await asyncio.sleep(0)  # as on a network, an answer is never immediate: a retry loop lets others run
        return self.hub.client_endpoint(node_id) is not None

    def endpoint(self, node_id: str) -> tuple[ClientServicer, asyncio.Event]:
        """The node's client service and its "gone" event, or UNAVAILABLE when it does not run on the hub."""
        found = self.hub.client_endpoint(node_id)
        if found is None:
            raise _error(grpc.StatusCode.UNAVAILABLE, f"{node_id} does not run on the memory hub")
        return found


class _NodeStub:
    """What a `DLedgerClientServiceStub` offers, for one node."""

    def __init__(self, stubs: MemoryStubs, node_id: str) -> None:
        self._stubs = stubs
        self._node_id = node_id

    def __getattr__(self, method: str) -> Any:
        if method not in UNARY:
            raise AttributeError(method)

        async def call(request: Message, timeout: float | None = None, metadata: Any = None) -> Message:
            await asyncio.sleep(0)  # never an immediate answer (see `ready`)
            servicer, _ = self._stubs.endpoint(self._node_id)
            handler = getattr(servicer, method)
            try:
                answer: Message = await asyncio.wait_for(handler(_copy(request), None), timeout)
            except TimeoutError:
                raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} on {self._node_id}: deadline") from None
            return _copy(answer)

        return call

    def AppendStream(self, metadata: Any = None) -> _StreamCall:
        return _StreamCall(self._stubs, self._node_id)


class _StreamCall:
    """One `AppendStream` call: `write`, iterate the answers, `cancel` (what `AppendStream` uses)."""

    def __init__(self, stubs: MemoryStubs, node_id: str) -> None:
        self._node_id = node_id
        self._requests: asyncio.Queue[pb.AppendStreamRequest | None] = asyncio.Queue()
        self._done = False
        try:
            servicer, self._gone = stubs.endpoint(node_id)
        except grpc.aio.AioRpcError as exc:
            self._failure: grpc.aio.AioRpcError | None = exc
            return
        self._failure = None
        self._answers = servicer.AppendStream(self._incoming(), None)

    async def _incoming(self) -> AsyncIterator[pb.AppendStreamRequest]:
        while (message := await self._requests.get()) is not None:
            yield message

    def _broken(self) -> grpc.aio.AioRpcError | None:
        if self._failure is None and self._gone.is_set():
            self._failure = _error(grpc.StatusCode.UNAVAILABLE, f"{self._node_id} stopped")
        return self._failure

    async def write(self, message: pb.AppendStreamRequest) -> None:
        await asyncio.sleep(0)  # never an immediate answer (see `MemoryStubs.ready`)
        if (failure := self._broken()) is not None:
            raise failure
        if self._done:
            raise _error(grpc.StatusCode.CANCELLED, "the stream was cancelled")
        self._requests.put_nowait(_copy(message))

    def __aiter__(self) -> AsyncIterator[pb.AppendStreamResponse]:
        return self._read()

    async def _read(self) -> AsyncIterator[pb.AppendStreamResponse]:
        if (failure := self._broken()) is not None:
            raise failure
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(self._answers))
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    raise self._broken() or _error(grpc.StatusCode.UNAVAILABLE, f"{self._node_id} stopped")
                try:
                    answer = step.result()
                except StopAsyncIteration:
                    return
                yield _copy(answer)
        finally:
            gone.cancel()

    def cancel(self) -> bool:
        if not self._done:
            self._done = True
            self._requests.put_nowait(None)
        return True
