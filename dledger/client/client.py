"""`DLedgerClient`: the blocking Python client of a dledger group (see `aio_client` for asyncio).

It follows the leader (NOT_LEADER carries the leader's id and address), retries only what was definitely
not written, and raises `OutcomeUnknownError` when a write may have happened (see `client_policy`).
Thread-safety: one client per thread, or guard it. Channels are opened lazily, one per node; a request goes
only over a channel that is connected (one that is not is asked to reconnect, and the request moves on to
another node at once), and `close()` or leaving a `with` block closes them all.
"""

from __future__ import annotations

import threading
import time
import warnings
import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.client_policy import (
    Call,
    DLedgerError,
    EntryNotFoundError,
    Route,
    RpcOutcome,
    Sleep,
    run_request,
)
from dledger.net.addresses import format_peers, parse_peers
from dledger.net.tls import TlsConfig
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
        token: str | None = None,
    ) -> None:
        """`token`: a bearer token for a group with client authorization on (docs/security.md); every call
        carries it (use TLS with it: a plaintext channel shows it to anyone on the path)."""
        self.group = group
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
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
    """Blocking client. `peers` is a `dLegerPeers` string (`n0-host:port;n1-host:port`) or a mapping.

    Use it as a context manager or call `close()`; a client collected unclosed closes its channels then
    (with a ResourceWarning), and one still open when the interpreter exits is closed before the exit."""

    def __init__(self, peers: str | Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(peers, **kwargs)
        self._nodes: dict[str, _NodeChannel] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(
            self, _release_unclosed, self._nodes, self._lock, format_peers(self._route.peers)
        )

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

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Close every channel now (idempotent); calls made after this raise `DLedgerError`."""
        if self._finalizer.detach() is not None:
            _close_all(self._nodes, self._lock)

    def __enter__(self) -> DLedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the shell around client_policy ----
    def _request(self, method: str, request: Any, write: bool, timeout: float | None) -> Any:
        return _drive(self._policy(method, request, write, timeout), self._call)

    def _call(self, call: Call) -> Any:
        if call.must_connect and not self._node(call.node_id).ready(call.timeout):
            return RpcOutcome.NOT_CONNECTED
        try:
            return getattr(self._stub(call.node_id), call.method)(
                call.request, timeout=call.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            if not call.must_connect:
                return RpcOutcome.NOT_CONNECTED if exc.code() not in REFUSED_CODES else RpcOutcome.REFUSED
            return classify_rpc_error(exc.code())

    def _node(self, node_id: str) -> _NodeChannel:
        node = self._nodes.get(node_id)
        if node is None:
            with self._lock:
                if self.closed:
                    raise DLedgerError("the client is closed")
                node = self._nodes.get(node_id)
                if node is None:
                    address = self._route.peers[node_id]
                    node = self._nodes[node_id] = _NodeChannel(address, self._options, self._credentials)
        return node

    def _stub(self, node_id: str) -> pb_grpc.DLedgerClientServiceStub:
        return self._node(node_id).stub


class _NodeChannel:
    """One node's channel and its stub, and whether the channel is connected.

    A channel whose connection dropped goes IDLE and stays IDLE until something asks it to connect, so
    `ready` asks every time. It asks gRPC's core channel directly (the calls grpc.aio exposes as
    `get_state(try_to_connect)` and `wait_for_state_change`): the blocking channel's only public way,
    `subscribe`, runs a polling thread that acts on a request to connect at its next wake (up to 0.2 s
    later) and races `close()`, and a live polling thread is what a channel collected at interpreter exit
    hangs on."""

    def __init__(self, address: str, options: Sequence[tuple[str, Any]], credentials: Any) -> None:
        self.channel = (
            grpc.insecure_channel(address, options=options)
            if credentials is None
            else grpc.secure_channel(address, credentials, options=options)
        )
        self.stub = pb_grpc.DLedgerClientServiceStub(self.channel)
        self._core: Any = self.channel._channel
        self._core.check_connectivity_state(True)  # start connecting now, before the first request

    def state(self, try_to_connect: bool) -> grpc.ChannelConnectivity:
        return _CONNECTIVITY[self._core.check_connectivity_state(try_to_connect)]

    def ready(self, timeout: float) -> bool:
        """True only if the channel is READY, so that a request sent now that fails may have arrived and one
        that was never sent did not. Waits (up to `timeout`) only while a connection attempt is under way,
        which on a dead node's address ends at once with "connection refused"; a channel that is failing
        (TRANSIENT_FAILURE: gRPC retries it in the background) answers False at once."""
        deadline = time.monotonic() + timeout
        try:
            state = self.state(True)
            while state in _CONNECTING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._core.watch_connectivity_state(state.value[0], time.time() + min(remaining, _WATCH_SLICE))
                state = self.state(True)
        except ValueError:  # gRPC's answer on a channel closed meanwhile (by close() on another thread)
            raise DLedgerError("the client is closed") from None
        return bool(state == grpc.ChannelConnectivity.READY)

    def close(self) -> None:
        self.channel.close()


_CONNECTIVITY = {s.value[0]: s for s in grpc.ChannelConnectivity}
_CONNECTING = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)
_WATCH_SLICE = 0.1  # a watch is re-armed this often, so a missed state change costs at most this


def _close_all(nodes: dict[str, _NodeChannel], lock: threading.Lock) -> None:
    with lock:
        channels = list(nodes.values())
        nodes.clear()
    for node in channels:
        node.close()


def _release_unclosed(nodes: dict[str, _NodeChannel], lock: threading.Lock, peers: str) -> None:
    """Finalizer of a client collected (or left at interpreter exit) without `close()`."""
    if nodes:
        warnings.warn(f"unclosed DLedgerClient for {peers}; use it as a context manager", ResourceWarning, stacklevel=1)
    _close_all(nodes, lock)


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
