"""`DLedgerClient`: the blocking Python client of a dledger group (see `aio_client` for asyncio).

It follows the leader (NOT_LEADER carries the leader's id and address), retries only what was definitely
not written, and raises `OutcomeUnknownError` when a write may have happened (see `client_policy`).
Thread-safety: one client per thread, or guard it; channels are opened lazily, one per node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.server.client_policy import (
    Call,
    DLedgerError,
    EntryNotFoundError,
    Route,
    RpcOutcome,
    Sleep,
    run_request,
)
from dledger.server.config import parse_peers
from dledger.server.tls import TlsConfig
from dledger.storage_api import Entry, EntryKind

__all__ = [
    "AppendResult",
    "ClientBase",
    "DLedgerClient",
    "DLedgerError",
    "NodeInfo",
    "classify_rpc_error",
    "entry_from_pb",
    "node_info_from_pb",
]

#: gRPC codes that mean the server (or the client library) refused the call before processing it
REFUSED_CODES = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass(frozen=True, slots=True)
class AppendResult:
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node's status as it reports it; `reachable=False` (with `error`) when it did not answer."""

    id: str
    address: str
    reachable: bool
    role: str = ""
    term: int = 0
    leader_id: str = ""
    first_index: int = 0
    last_index: int = 0
    commit_index: int = 0
    applied_index: int = 0
    healthy: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the group's configuration: a voter, or a learner (non-voting) when `voter` is False."""

    id: str
    address: str
    voter: bool


@dataclass(frozen=True, slots=True)
class MembershipResult:
    """A committed membership change: the CONFIG entry's index and the configuration after it."""

    index: int
    members: tuple[Member, ...]


def members_from_pb(members: Sequence[pb.Member]) -> tuple[Member, ...]:
    return tuple(Member(m.id, m.address, m.voter) for m in members)


def classify_rpc_error(code: grpc.StatusCode | None) -> RpcOutcome:
    """What a failed call means, given that the connection was up when it was sent."""
    return RpcOutcome.REFUSED if code in REFUSED_CODES else RpcOutcome.FAILED_AFTER_SEND


def entry_from_pb(msg: pb.Entry) -> Entry:
    return Entry(index=msg.index, term=msg.term, data=msg.data, kind=EntryKind(msg.kind))


def node_info_from_pb(node_id: str, address: str, msg: pb.NodeStatus) -> NodeInfo:
    return NodeInfo(
        id=msg.id or node_id,
        address=msg.address or address,
        reachable=True,
        role=msg.role,
        term=msg.term,
        leader_id=msg.leader_id,
        first_index=msg.first_index,
        last_index=msg.last_index,
        commit_index=msg.commit_index,
        applied_index=msg.applied_index,
        healthy=msg.healthy,
        error=msg.error,
    )


def _peers(peers: str | Mapping[str, str]) -> dict[str, str]:
    return parse_peers(peers, key="peers") if isinstance(peers, str) else dict(peers)


class ClientBase:
    """What the blocking and asyncio clients share: peers, group, timeouts, the leader guess, and the
    translation between calls and protobuf messages. Subclasses add the I/O."""

    def __init__(
        self,
        peers: str | Mapping[str, str],
        *,
        group: str = "default",
        timeout: float = 5.0,
        rpc_timeout: float = 1.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        tls: TlsConfig | None = None,
    ) -> None:
        self.group = group
        self.timeout = timeout
        self.rpc_timeout = rpc_timeout
        self._route = Route(_peers(peers))
        self._options = [*CHANNEL_OPTIONS, *channel_options]
        self._credentials = tls.channel_credentials() if tls is not None else None

    @property
    def leader(self) -> str | None:
        """The node this client believes leads (learned from replies), if any."""
        return self._route.leader

    def _policy(self, method: str, request: Any, write: bool, timeout: float | None) -> Generator[Any, Any, Any]:
        return run_request(
            self._route,
            method,
            request,
            write=write,
            timeout=self.timeout if timeout is None else timeout,
            rpc_timeout=self.rpc_timeout,
            now=time.monotonic,
        )

    def _append_request(self, items: Sequence[bytes]) -> pb.AppendRequest:
        return pb.AppendRequest(group=self.group, data=list(items))

    @staticmethod
    def _append_results(reply: pb.AppendResponse, count: int) -> list[AppendResult]:
        return [AppendResult(reply.first_index + k, reply.term) for k in range(count)]

    def _change_request(self, op: int, node_id: str, address: str = "") -> pb.ChangeMembershipRequest:
        return pb.ChangeMembershipRequest(group=self.group, op=op, node_id=node_id, address=address)  # type: ignore[arg-type]

    @staticmethod
    def _membership_result(reply: pb.ChangeMembershipResponse) -> MembershipResult:
        return MembershipResult(reply.index, members_from_pb(reply.members))

    @staticmethod
    def _entry(index: int, reply: pb.GetResponse) -> Entry:
        if reply.status != pb.STATUS_OK:
            raise EntryNotFoundError(f"entry {index}: {reply.message or pb.Status.Name(reply.status)}")
        return entry_from_pb(reply.entry)


class DLedgerClient(ClientBase):
    """Blocking client. `peers` is a `dLegerPeers` string (`n0-host:port;n1-host:port`) or a mapping."""

    def __init__(self, peers: str | Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(peers, **kwargs)
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, pb_grpc.DLedgerClientServiceStub] = {}
        self._states: dict[str, _ChannelState] = {}

    # ---- public API ----
    def append(self, data: bytes, *, timeout: float | None = None) -> AppendResult:
        return self.append_batch([data], timeout=timeout)[0]

    def append_batch(self, items: Sequence[bytes], *, timeout: float | None = None) -> list[AppendResult]:
        if not items:
            return []
        reply = self._request("Append", self._append_request(items), True, timeout)
        return self._append_results(reply, len(items))

    def get(self, index: int, *, timeout: float | None = None) -> Entry:
        return self._entry(index, self._request("Get", pb.GetRequest(group=self.group, index=index), False, timeout))

    def read_index(self, *, timeout: float | None = None) -> int:
        return int(self._request("ReadIndex", pb.ReadIndexRequest(group=self.group), False, timeout).read_index)

    def transfer_leadership(self, to: str, *, timeout: float | None = None) -> None:
        request = pb.TransferLeadershipRequest(group=self.group, to_id=to)
        self._request("TransferLeadership", request, False, timeout)

    # membership (thesis 4.1): one change at a time, each committed through the log before it returns
    def add_learner(self, node_id: str, address: str, *, timeout: float | None = None) -> MembershipResult:
        """Add a non-voting member that receives the log (start its node with `--join` first)."""
        request = self._change_request(pb.MEMBER_OP_ADD_LEARNER, node_id, address)
        return self._membership_result(self._request("ChangeMembership", request, True, timeout))

    def promote(self, node_id: str, *, timeout: float | None = None) -> MembershipResult:
        """Make a caught-up learner a voter (refused while it lags)."""
        request = self._change_request(pb.MEMBER_OP_PROMOTE, node_id)
        return self._membership_result(self._request("ChangeMembership", request, True, timeout))

    def remove(self, node_id: str, *, timeout: float | None = None) -> MembershipResult:
        """Remove a voter or learner; the leader may remove itself (it steps down once the change commits)."""
        request = self._change_request(pb.MEMBER_OP_REMOVE, node_id)
        return self._membership_result(self._request("ChangeMembership", request, True, timeout))

    def members(self, *, timeout: float | None = None) -> tuple[Member, ...]:
        """The configuration in effect on the leader."""
        reply = self._request("Members", pb.MembersRequest(group=self.group), False, timeout)
        return members_from_pb(reply.members)

    def compact(self, node_id: str, before_index: int = 0, *, timeout: float | None = None) -> tuple[int, int]:
        """Compact `node_id`'s log below `before_index` (0: as far as it can); returns its new first index
        and its latest snapshot index. Asks that node only (compaction is local to each replica)."""
        request = pb.CompactRequest(group=self.group, before_index=before_index)
        try:
            reply = self._stub(node_id).Compact(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise DLedgerError(f"compact on {node_id}: {exc.code()}") from None
        if reply.status != pb.STATUS_OK:
            raise DLedgerError(f"compact on {node_id}: {pb.Status.Name(reply.status)} {reply.message}")
        return int(reply.first_index), int(reply.snapshot_index)

    def status(self, *, timeout: float | None = None) -> list[NodeInfo]:
        """Ask every node for its own status; a node that does not answer is reported unreachable."""
        out = []
        for node_id, address in list(self._route.peers.items()):
            try:
                reply = self._stub(node_id).Status(
                    pb.StatusRequest(group=self.group), timeout=timeout or self.rpc_timeout
                )
                out.append(node_info_from_pb(node_id, address, reply.node))
            except grpc.RpcError as exc:
                out.append(NodeInfo(node_id, address, reachable=False, error=str(exc.code())))
        return out

    def close(self) -> None:
        # gRPC's connectivity poller wakes every 0.2 s; once unsubscribed it stops at its next wake. Closing
        # the channel under it makes it fail on a closed channel, so the channels close just after that.
        channels = list(self._channels.items())
        for node_id, channel in channels:
            channel.unsubscribe(self._states[node_id].update)
        if channels:
            closer = threading.Timer(0.25, lambda: [c.close() for _, c in channels])
            closer.daemon = True
            closer.start()
        self._channels.clear()
        self._stubs.clear()

    def __enter__(self) -> DLedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the shell around client_policy ----
    def _request(self, method: str, request: Any, write: bool, timeout: float | None) -> Any:
        return _drive(self._policy(method, request, write, timeout), self._call)

    def _call(self, call: Call) -> Any:
        if call.must_connect and not self._connected(call.node_id, call.timeout):
            return RpcOutcome.NOT_CONNECTED
        try:
            return getattr(self._stub(call.node_id), call.method)(call.request, timeout=call.timeout)
        except grpc.RpcError as exc:
            if not call.must_connect:
                return RpcOutcome.NOT_CONNECTED if exc.code() not in REFUSED_CODES else RpcOutcome.REFUSED
            return classify_rpc_error(exc.code())

    def _stub(self, node_id: str) -> pb_grpc.DLedgerClientServiceStub:
        stub = self._stubs.get(node_id)
        if stub is None:
            address = self._route.peers[node_id]
            channel = (
                grpc.insecure_channel(address, options=self._options)
                if self._credentials is None
                else grpc.secure_channel(address, self._credentials, options=self._options)
            )
            state = _ChannelState()
            channel.subscribe(state.update, try_to_connect=True)
            self._channels[node_id], self._states[node_id] = channel, state
            stub = self._stubs[node_id] = pb_grpc.DLedgerClientServiceStub(channel)
        return stub

    def _connected(self, node_id: str, timeout: float) -> bool:
        self._stub(node_id)
        return self._states[node_id].wait_settled(timeout)


class _ChannelState:
    """The last connectivity state gRPC reported for a channel (callbacks arrive on gRPC's thread)."""

    _PENDING = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state = grpc.ChannelConnectivity.IDLE

    def update(self, state: grpc.ChannelConnectivity) -> None:
        with self._cond:
            self._state = state
            self._cond.notify_all()

    def wait_settled(self, timeout: float) -> bool:
        """Wait while the channel is still connecting; True only if it is READY (a failed one answers now)."""
        with self._cond:
            self._cond.wait_for(lambda: self._state not in self._PENDING, timeout)
            return bool(self._state == grpc.ChannelConnectivity.READY)


def _drive(gen: Generator[Call | Sleep, Any, Any], call: Any) -> Any:
    try:
        effect = next(gen)
        while True:
            if isinstance(effect, Sleep):
                time.sleep(effect.seconds)
                effect = gen.send(None)
            else:
                effect = gen.send(call(effect))
    except StopIteration as stop:
        return stop.value
