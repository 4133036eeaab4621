"""`AsyncDLedgerClient`: the asyncio client, for high-throughput callers (many appends in flight).

Same rules as the blocking `DLedgerClient` (both drive `client_policy.run_request`); one instance may be
used by many tasks of one event loop at once. Appends to a known, connected leader go over one
`AppendStream` (see append_stream.py) shared by all tasks (`streaming=False` turns that off); anything
the stream cannot settle (no leader known, not the leader any more, busy, a request the stream never sent)
takes the unary path with its retry policy, and a request the stream sent without an answer is "outcome
unknown", exactly as on the unary path.

Nodes are reached through gRPC channels, or through a `StubSource` given as `stubs=` (in-process tests:
`dledger.testing.memory_client.MemoryStubs` calls the nodes' services with no socket); the retry and
outcome rules are the same either way.
"""

from __future__ import annotations

import asyncio
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.append_stream import AppendStream, NotSent, Unanswered
from dledger.client.client import (
    REFUSED_CODES,
    AppendResult,
    ClientBase,
    Member,
    MembershipResult,
    NodeInfo,
    classify_rpc_error,
    members_from_pb,
    node_info_from_pb,
)
from dledger.client.client_policy import (
    Call,
    DLedgerError,
    InvalidRequestError,
    OutcomeUnknownError,
    RpcOutcome,
    Sleep,
)
from dledger.net.addresses import format_peers
from dledger.storage_api import Entry

__all__ = ["AsyncDLedgerClient", "StubSource", "channel_ready"]


class StubSource(Protocol):
    """Another way to a node than a gRPC channel: `stub` answers like a `DLedgerClientServiceStub` (its
    failures as `grpc.aio.AioRpcError`), `ready` like `channel_ready`."""

    def stub(self, node_id: str, address: str) -> Any: ...

    async def ready(self, node_id: str, timeout: float) -> bool: ...


async def channel_ready(channel: grpc.aio.Channel, timeout: float) -> bool:
    """True once `channel` is READY; False at once if it is failing, or after `timeout` connecting. A request
    sent only on a ready channel that then fails may have arrived; one that never found it ready did not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            return False
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True


class AsyncDLedgerClient(ClientBase):
    """asyncio client; `peers` is a `dLegerPeers` string or a mapping. Use `async with` or `await close()`;
    a client collected unclosed drops its channels then (gRPC closes a collected channel), with a
    ResourceWarning."""

    def __init__(
        self,
        peers: str | Mapping[str, str],
        *,
        streaming: bool = True,
        stubs: StubSource | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(peers, **kwargs)
        self.streaming = streaming
        self._stub_source = stubs
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.DLedgerClientServiceStub] = {}
        self._stream: AppendStream | None = None
        self._opening: asyncio.Task[AppendStream | None] | None = None
        self._finalizer = weakref.finalize(
            self, _release_unclosed, self._channels, self._stubs, format_peers(self._route.peers)
        )

    async def append(self, data: bytes, *, timeout: float | None = None) -> AppendResult:
        return (await self.append_batch([data], timeout=timeout))[0]

    async def append_batch(self, items: Sequence[bytes], *, timeout: float | None = None) -> list[AppendResult]:
        if not items:
            return []
        if self.streaming and self._route.leader is not None:
            reply = await self._append_streamed(items, self.timeout if timeout is None else timeout)
            if reply is not None:
                return self._append_results(reply, len(items))
        reply = await self._request("Append", self._append_request(items), True, timeout)
        return self._append_results(reply, len(items))

    async def _append_streamed(self, items: Sequence[bytes], timeout: float) -> pb.AppendResponse | None:
        """The reply through the leader's stream, or None when the unary path must take the request."""
        stream = self._stream
        if stream is None or stream.closed or stream.node_id != self._route.leader:
            stream = await self._open_stream()
            if stream is None:
                return None
        try:
            reply = await stream.submit(items, timeout)
        except NotSent:
            return None
        except Unanswered as exc:
            self._route.failed(stream.node_id)
            raise OutcomeUnknownError(f"append on {stream.node_id}: {exc}; the outcome is unknown") from None
        status = reply.status
        if status == pb.STATUS_OK:
            return reply
        if status in (pb.STATUS_INVALID, pb.STATUS_WRONG_GROUP):
            raise InvalidRequestError(f"Append refused by {stream.node_id}: {reply.message}")
        if status in (pb.STATUS_UNAVAILABLE, pb.STATUS_STORAGE_ERROR):
            self._route.failed(stream.node_id)
            raise OutcomeUnknownError(f"Append on {stream.node_id}: {reply.message}; the outcome is unknown")
        if status == pb.STATUS_NOT_LEADER and not self._route.redirect(reply.leader_id, reply.leader_address):
            self._route.failed(stream.node_id)
        return None  # not written (not the leader, busy): the unary path retries with its policy

    async def _open_stream(self) -> AppendStream | None:
        """The stream to the known leader, opened once even when many tasks ask at the same time."""
        if self._opening is None or self._opening.done():
            self._opening = asyncio.get_running_loop().create_task(self._new_stream())
        return await asyncio.shield(self._opening)

    async def _new_stream(self) -> AppendStream | None:
        leader = self._route.leader
        if leader is None:
            return None
        old, self._stream = self._stream, None
        if old is not None:
            await old.close()
        if not await self._connected(leader, self.rpc_timeout):
            return None  # the unary path finds out what is wrong
        self._stream = AppendStream(self._stub(leader), leader, self.group, self._metadata)
        return self._stream

    async def get(self, index: int, *, timeout: float | None = None) -> Entry:
        request = pb.GetRequest(group=self.group, index=index)
        return self._entry(index, await self._request("Get", request, False, timeout))

    async def read_index(self, *, timeout: float | None = None) -> int:
        reply = await self._request("ReadIndex", pb.ReadIndexRequest(group=self.group), False, timeout)
        return int(reply.read_index)

    async def confirmed_term(self, *, timeout: float | None = None) -> int:
        """The leader's term, read after a quorum confirmed its leadership in it (a ReadIndex round): every
        entry committed before this call was committed in this term or an older one."""
        reply = await self._request("ReadIndex", pb.ReadIndexRequest(group=self.group), False, timeout)
        return int(reply.term)

    async def transfer_leadership(self, to: str, *, timeout: float | None = None) -> None:
        request = pb.TransferLeadershipRequest(group=self.group, to_id=to)
        await self._request("TransferLeadership", request, False, timeout)

    async def add_learner(self, node_id: str, address: str, *, timeout: float | None = None) -> MembershipResult:
        request = self._change_request(pb.MEMBER_OP_ADD_LEARNER, node_id, address)
        return self._membership_result(await self._request("ChangeMembership", request, True, timeout))

    async def promote(self, node_id: str, *, timeout: float | None = None) -> MembershipResult:
        request = self._change_request(pb.MEMBER_OP_PROMOTE, node_id)
        return self._membership_result(await self._request("ChangeMembership", request, True, timeout))

    async def remove(self, node_id: str, *, timeout: float | None = None) -> MembershipResult:
        request = self._change_request(pb.MEMBER_OP_REMOVE, node_id)
        return self._membership_result(await self._request("ChangeMembership", request, True, timeout))

    async def members(self, *, timeout: float | None = None) -> tuple[Member, ...]:
        reply = await self._request("Members", pb.MembersRequest(group=self.group), False, timeout)
        return members_from_pb(reply.members)

    async def status(self, *, timeout: float | None = None) -> list[NodeInfo]:
        async def one(node_id: str, address: str) -> NodeInfo:
            try:
                reply = await self._stub(node_id).Status(
                    pb.StatusRequest(group=self.group), timeout=timeout or self.rpc_timeout
                )
                return node_info_from_pb(node_id, address, reply.node)
            except grpc.aio.AioRpcError as exc:
                return NodeInfo(node_id, address, reachable=False, error=str(exc.code()))

        return list(await asyncio.gather(*(one(i, a) for i, a in list(self._route.peers.items()))))

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    async def close(self) -> None:
        """Close the stream and every channel (idempotent); calls made after this raise `DLedgerError`."""
        self._finalizer.detach()
        if self._opening is not None:
            self._opening.cancel()
            await asyncio.gather(self._opening, return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncDLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, method: str, request: Any, write: bool, timeout: float | None) -> Any:
        gen = self._policy(method, request, write, timeout)
        try:
            effect = next(gen)
            while True:
                if isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
                    effect = gen.send(None)
                else:
                    effect = gen.send(await self._call(effect))
        except StopIteration as stop:
            return stop.value

    async def _call(self, call: Call) -> Any:
        stub = self._stub(call.node_id)
        if call.must_connect and not await self._connected(call.node_id, call.timeout):
            return RpcOutcome.NOT_CONNECTED
        try:
            return await getattr(stub, call.method)(call.request, timeout=call.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if not call.must_connect:
                return RpcOutcome.REFUSED if exc.code() in REFUSED_CODES else RpcOutcome.NOT_CONNECTED
            return classify_rpc_error(exc.code())

    def _stub(self, node_id: str) -> pb_grpc.DLedgerClientServiceStub:
        stub = self._stubs.get(node_id)
        if stub is None:
            if self.closed:
                raise DLedgerError("the client is closed")
            address = self._route.peers[node_id]
            if self._stub_source is not None:
                stub = self._stubs[node_id] = self._stub_source.stub(node_id, address)
                return stub
            channel = (
                grpc.aio.insecure_channel(address, options=self._options)
                if self._credentials is None
                else grpc.aio.secure_channel(address, self._credentials, options=self._options)
            )
            self._channels[node_id] = channel
            stub = self._stubs[node_id] = pb_grpc.DLedgerClientServiceStub(channel)
        return stub

    async def _connected(self, node_id: str, timeout: float) -> bool:
        self._stub(node_id)  # opens the channel (or refuses on a closed client)
        if self._stub_source is not None:
            return await self._stub_source.ready(node_id, timeout)
        return await channel_ready(self._channels[node_id], timeout)


def _release_unclosed(channels: dict[str, grpc.aio.Channel], stubs: dict[str, Any], peers: str) -> None:
    """Finalizer of a client collected without `close()`: drop its channels, which gRPC closes as they go."""
    if channels:
        warnings.warn(
            f"unclosed AsyncDLedgerClient for {peers}; use `async with` or `await close()`",
            ResourceWarning,
            stacklevel=1,
        )
    stubs.clear()
    channels.clear()
