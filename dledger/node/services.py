"""The client gRPC service: checks each request, calls the node through `NodeAPI`, maps errors to statuses.

Invariants: a request for another group or with invalid fields gets an error status and reaches nothing;
every node error becomes a status from `protos/dledger.proto` with its meaning kept:
NOT_LEADER / BUSY / INVALID mean "definitely not written", UNAVAILABLE means "outcome unknown".
No exception escapes to gRPC (that would become UNKNOWN, which a client could not classify).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc.aio

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.node.errors import BusyError, LeaderHint, NodeNotLeaderError, NodeOutcomeUnknownError, NodeStoppedError
from dledger.storage_api import CompactedError, Entry, UnavailableError

__all__ = ["ClientServicer", "NodeAPI", "RequestMetrics"]

log = logging.getLogger(__name__)


class NodeAPI(Protocol):
    """What the services need from a running node (the driver implements it)."""

    group: str
    max_entry_bytes: int

    async def append(self, items: Sequence[bytes]) -> tuple[int, int]:
        """Propose, wait for commit; return (first index, term)."""
        ...

    def submit(self, items: Sequence[bytes]) -> asyncio.Future[tuple[int, int]]:
        """Like `append`, as a future (raises NodeStoppedError at once when the node is not running)."""
        ...

    async def read_index(self) -> int: ...

    @property
    def current_term(self) -> int: ...

    async def get(self, index: int) -> Entry:
        """A committed entry; raises CompactedError / UnavailableError (not committed or past the end), or
        NodeNotLeaderError on a follower past what it has both committed and written (only the leader may
        say "not committed")."""
        ...

    def node_status(self) -> pb.NodeStatus: ...

    async def transfer_leadership(self, to_id: str) -> None: ...

    def leader_hint(self) -> LeaderHint: ...

    async def change_membership(self, op: int, node_id: str, address: str) -> tuple[int, list[pb.Member]]:
        """Propose a single-server change (`pb.MemberOp`) and wait until it is committed; return the CONFIG
        entry's index and the configuration after it. ValueError: an invalid change (not proposed);
        BusyError: another change in flight or the leader's term not yet open (not proposed, retry)."""
        ...

    def members(self) -> list[pb.Member]:
        """The configuration in effect (leader only: NodeNotLeaderError elsewhere)."""
        ...

    async def compact(self, before_index: int) -> int:
        """Compact this node's log below `before_index` (see RaftNode.compact); the new first index."""
        ...

    def snapshot_index(self) -> int:
        """This node's latest snapshot index (0: none)."""
        ...


Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class RequestMetrics(Protocol):
    """Where the service reports request latencies (`NodeMetrics` implements it)."""

    append_latency: Any
    read_index_latency: Any
    appended_entries: Any


def _outcome(status: int) -> str:
    return pb.Status.Name(status).removeprefix("STATUS_").lower()


class ClientServicer(pb_grpc.DLedgerClientServiceServicer):  # type: ignore[misc]  # generated base is untyped
    def __init__(self, node: NodeAPI, metrics: RequestMetrics | None = None) -> None:
        self.node = node
        self.metrics = metrics

    async def Append(self, request: pb.AppendRequest, context: Context) -> pb.AppendResponse:
        started = time.perf_counter()
        response = await self._append(request)
        if self.metrics is not None:
            self.metrics.append_latency.labels(_outcome(response.status)).observe(time.perf_counter() - started)
            self.metrics.appended_entries.observe(len(request.data))
        return response

    async def AppendStream(
        self, request_iterator: AsyncIterator[pb.AppendStreamRequest], context: Context
    ) -> AsyncIterator[pb.AppendStreamResponse]:
        """Many appends over one stream: every request is proposed as it arrives (so the requests of one
        message, and of concurrent streams, share a Ready), and the answers ready at once go out together."""
        ready: list[pb.AppendResponse] = []
        wake = asyncio.Event()
        state = {"open": 0, "reading": True}

        def answer(response: pb.AppendResponse) -> None:
            ready.append(response)
            state["open"] -= 1
            wake.set()

        def settled(request_id: int, count: int, started: float, future: asyncio.Future[tuple[int, int]]) -> None:
            if future.cancelled():
                response = pb.AppendResponse(status=pb.STATUS_UNAVAILABLE, message="cancelled")
            elif (exc := future.exception()) is not None:
                response = _error_response(pb.AppendResponse, exc, _APPEND_ERRORS, pb.STATUS_UNAVAILABLE)
            else:
                first_index, term = future.result()
                response = pb.AppendResponse(status=pb.STATUS_OK, first_index=first_index, term=term)
            response.request_id = request_id
            if self.metrics is not None:
                self.metrics.append_latency.labels(_outcome(response.status)).observe(time.perf_counter() - started)
                self.metrics.appended_entries.observe(count)
            answer(response)

        async def read() -> None:
            try:
                async for message in request_iterator:
                    now = time.perf_counter()
                    for request in message.requests:
                        state["open"] += 1
                        items = list(request.data)  # one bytes object per entry, made once
                        refusal = self._check_append(request, items)
                        if refusal is not None:
                            refusal.request_id = request.request_id
                            answer(refusal)
                            continue
                        try:
                            future = self.node.submit(items)
                        except Exception as exc:  # stopped or fenced: nothing was proposed
                            refusal = _error_response(pb.AppendResponse, exc, _APPEND_ERRORS, pb.STATUS_NOT_LEADER)
                            refusal.request_id = request.request_id
                            answer(refusal)
                            continue
                        future.add_done_callback(partial(settled, request.request_id, len(items), now))
            finally:
                state["reading"] = False
                wake.set()

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while ready or state["reading"] or state["open"] > 0:
                if not ready:
                    await wake.wait()
                    wake.clear()
                    continue
                batch, ready[:] = list(ready), []
                yield pb.AppendStreamResponse(responses=batch)
        finally:
            reader.cancel()

    def _check_append(self, request: pb.AppendRequest, items: list[bytes]) -> pb.AppendResponse | None:
        """The refusal for a malformed append (nothing proposed), or None. `items` is `list(request.data)`:
        every access to the protobuf field builds a new bytes object per entry (a copy), so it is read once."""
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.AppendResponse(status=pb.STATUS_WRONG_GROUP, message=problem)
        if not items:
            return pb.AppendResponse(status=pb.STATUS_INVALID, message="append needs at least one entry")
        limit = self.node.max_entry_bytes
        if max(map(len, items)) > limit:  # C-level scan; the index only on refusal
            too_big = next(k for k, d in enumerate(items) if len(d) > limit)
            return pb.AppendResponse(
                status=pb.STATUS_INVALID,
                message=f"entry {too_big} has {len(items[too_big])} bytes; the limit is {limit}",
            )
        return None

    async def ReadIndex(self, request: pb.ReadIndexRequest, context: Context) -> pb.ReadIndexResponse:
        started = time.perf_counter()
        response = await self._read_index(request)
        if self.metrics is not None:
            self.metrics.read_index_latency.labels(_outcome(response.status)).observe(time.perf_counter() - started)
        return response

    def _wrong_group(self, group: str) -> str | None:
        if group != self.node.group:
            return f"this node serves group {self.node.group!r}, not {group!r}"
        return None

    async def _append(self, request: pb.AppendRequest) -> pb.AppendResponse:
        items = list(request.data)
        if (refusal := self._check_append(request, items)) is not None:
            return refusal

        async def work() -> pb.AppendResponse:
            first_index, term = await self.node.append(items)
            return pb.AppendResponse(status=pb.STATUS_OK, first_index=first_index, term=term)

        # after proposing, an unexpected failure leaves the outcome unknown: UNAVAILABLE
        return await _guard(pb.AppendResponse, "append", work, _APPEND_ERRORS, pb.STATUS_UNAVAILABLE)

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.GetResponse:
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.GetResponse(status=pb.STATUS_WRONG_GROUP, message=problem)
        if request.index < 1:
            return pb.GetResponse(status=pb.STATUS_INVALID, message="indexes start at 1")

        async def work() -> pb.GetResponse:
            e = await self.node.get(request.index)
            entry = pb.Entry(index=e.index, term=e.term, kind=int(e.kind), data=e.data)  # type: ignore[arg-type]
            return pb.GetResponse(status=pb.STATUS_OK, entry=entry)

        return await _guard(pb.GetResponse, "get", work, _GET_ERRORS, pb.STATUS_STORAGE_ERROR)

    async def _read_index(self, request: pb.ReadIndexRequest) -> pb.ReadIndexResponse:
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.ReadIndexResponse(status=pb.STATUS_WRONG_GROUP, message=problem)

        async def work() -> pb.ReadIndexResponse:
            index = await self.node.read_index()
            return pb.ReadIndexResponse(status=pb.STATUS_OK, read_index=index, term=self.node.current_term)

        return await _guard(pb.ReadIndexResponse, "read_index", work, _READ_ERRORS, pb.STATUS_UNAVAILABLE)

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusResponse:
        if self._wrong_group(request.group) is not None:
            return pb.StatusResponse(status=pb.STATUS_WRONG_GROUP, node=self.node.node_status())
        return pb.StatusResponse(status=pb.STATUS_OK, node=self.node.node_status())

    async def TransferLeadership(
        self, request: pb.TransferLeadershipRequest, context: Context
    ) -> pb.TransferLeadershipResponse:
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.TransferLeadershipResponse(status=pb.STATUS_WRONG_GROUP, message=problem)

        async def work() -> pb.TransferLeadershipResponse:
            await self.node.transfer_leadership(request.to_id)
            hint = self.node.leader_hint()
            return pb.TransferLeadershipResponse(
                status=pb.STATUS_OK, leader_id=hint.leader_id, leader_address=hint.leader_address
            )

        return await _guard(
            pb.TransferLeadershipResponse, "transfer_leadership", work, _TRANSFER_ERRORS, pb.STATUS_UNAVAILABLE
        )

    async def ChangeMembership(
        self, request: pb.ChangeMembershipRequest, context: Context
    ) -> pb.ChangeMembershipResponse:
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.ChangeMembershipResponse(status=pb.STATUS_WRONG_GROUP, message=problem)
        if not request.node_id:
            return pb.ChangeMembershipResponse(status=pb.STATUS_INVALID, message="a membership change needs a node id")
        if request.op == pb.MEMBER_OP_ADD_LEARNER and not request.address:
            return pb.ChangeMembershipResponse(status=pb.STATUS_INVALID, message="adding a node needs its address")

        async def work() -> pb.ChangeMembershipResponse:
            index, members = await self.node.change_membership(int(request.op), request.node_id, request.address)
            return pb.ChangeMembershipResponse(status=pb.STATUS_OK, index=index, members=members)

        return await _guard(
            pb.ChangeMembershipResponse, "change_membership", work, _CHANGE_ERRORS, pb.STATUS_UNAVAILABLE
        )

    async def Members(self, request: pb.MembersRequest, context: Context) -> pb.MembersResponse:
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.MembersResponse(status=pb.STATUS_WRONG_GROUP, message=problem)

        async def work() -> pb.MembersResponse:
            return pb.MembersResponse(status=pb.STATUS_OK, members=self.node.members())

        return await _guard(pb.MembersResponse, "members", work, _READ_ERRORS, pb.STATUS_UNAVAILABLE)

    async def Compact(self, request: pb.CompactRequest, context: Context) -> pb.CompactResponse:
        if (problem := self._wrong_group(request.group)) is not None:
            return pb.CompactResponse(status=pb.STATUS_WRONG_GROUP, message=problem)

        async def work() -> pb.CompactResponse:
            before = request.before_index or (1 << 62)
            first = await self.node.compact(before)
            return pb.CompactResponse(status=pb.STATUS_OK, first_index=first, snapshot_index=self.node.snapshot_index())

        return await _guard(pb.CompactResponse, "compact", work, _COMPACT_ERRORS, pb.STATUS_STORAGE_ERROR)


ErrorTable = tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...]
_REFUSED = (BusyError, NodeOutcomeUnknownError, NodeStoppedError)
# exception -> status, first match wins; NodeStoppedError on append is "not leader": nothing was proposed
_APPEND_ERRORS: ErrorTable = (
    (NodeNotLeaderError, pb.STATUS_NOT_LEADER),
    (BusyError, pb.STATUS_BUSY),
    (NodeStoppedError, pb.STATUS_NOT_LEADER),
    (NodeOutcomeUnknownError, pb.STATUS_UNAVAILABLE),
)
_GET_ERRORS: ErrorTable = (
    (NodeNotLeaderError, pb.STATUS_NOT_LEADER),
    (NodeStoppedError, pb.STATUS_NOT_LEADER),  # stopping or fenced: ask another node (not a storage error)
    (CompactedError, pb.STATUS_COMPACTED),
    (UnavailableError, pb.STATUS_NOT_FOUND),
    (_REFUSED, pb.STATUS_UNAVAILABLE),  # the leader could not confirm its commit index (ReadIndex) in time
)
_READ_ERRORS: ErrorTable = ((NodeNotLeaderError, pb.STATUS_NOT_LEADER), (_REFUSED, pb.STATUS_UNAVAILABLE))
_TRANSFER_ERRORS: ErrorTable = (
    (NodeNotLeaderError, pb.STATUS_NOT_LEADER),
    (ValueError, pb.STATUS_INVALID),
    (_REFUSED, pb.STATUS_UNAVAILABLE),
)

_CHANGE_ERRORS: ErrorTable = (
    (NodeNotLeaderError, pb.STATUS_NOT_LEADER),
    (BusyError, pb.STATUS_BUSY),
    (ValueError, pb.STATUS_INVALID),
    (NodeStoppedError, pb.STATUS_NOT_LEADER),
    (NodeOutcomeUnknownError, pb.STATUS_UNAVAILABLE),
)

_COMPACT_ERRORS: ErrorTable = ((NodeStoppedError, pb.STATUS_UNAVAILABLE),)

R = TypeVar("R")


async def _guard(
    response: Callable[..., R], what: str, work: Callable[[], Awaitable[R]], errors: ErrorTable, fallback: int
) -> R:
    """Run `work`; map a known exception to its status (with the leader hint), anything else to `fallback`."""
    try:
        return await work()
    except Exception as exc:
        if not any(isinstance(exc, types) for types, _ in errors):
            log.exception("%s failed", what)
        return _error_response(response, exc, errors, fallback)


def _error_response(response: Callable[..., R], exc: BaseException, errors: ErrorTable, fallback: int) -> R:
    """A known exception as its status (with the leader hint), anything else as `fallback`."""
    for types, status in errors:
        if isinstance(exc, types):
            hint = exc.hint if isinstance(exc, NodeNotLeaderError) else LeaderHint()
            return response(
                status=status, message=str(exc), leader_id=hint.leader_id, leader_address=hint.leader_address
            )
    return response(status=fallback, message=f"internal error: {exc}")
