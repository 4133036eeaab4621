"""The client's retry policy, sans I/O: where to send a request, what a reply means, when to give up.

A request is a generator (`run_request`) that yields effects (`Call`, `Sleep`) and receives their results;
`dledger.client.client` drives it with blocking gRPC and `dledger.client.aio_client` with grpc.aio, so the
rules live in one place. The rules:
- a write that was definitely not applied (NOT_LEADER, BUSY, could not connect, wrong group, invalid) raises
  a `NotWrittenError` subclass; only those failures are retried (NOT_LEADER follows the leader's address);
- once a write may have reached a leader (a timeout or a broken connection after sending, or the server's
  UNAVAILABLE / STORAGE_ERROR), the outcome is unknown: `OutcomeUnknownError`, never retried, because a retry
  could write the data twice;
- reads are idempotent, so every failure of a read is retried until the deadline.
Finding the leader: a NOT_LEADER hint is followed at once, unless it names a node this request has just
found unreachable (most likely a dead leader that the follower has not yet given up on); such a node is
passed over for a moment, and while no leader answers the policy asks again every 20 ms at most, so that
it finds a newly elected leader within about that much of the election (BUSY backs off up to 0.2 s).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from dledger._proto import dledger_pb2 as pb

__all__ = [
    "Call",
    "DLedgerError",
    "EntryNotFoundError",
    "InvalidRequestError",
    "NotLeaderError",
    "NotWrittenError",
    "OutcomeUnknownError",
    "Route",
    "RpcOutcome",
    "Sleep",
    "run_request",
]


class DLedgerError(Exception):
    """Base of every error the client raises."""


class NotWrittenError(DLedgerError):
    """The write was definitely not applied (and will never be): safe to retry elsewhere."""


class NotLeaderError(NotWrittenError):
    """No leader accepted the request before the deadline."""

    def __init__(self, message: str, leader_id: str = "", leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_id = leader_id
        self.leader_address = leader_address


class InvalidRequestError(NotWrittenError):
    """The server refused the request as malformed, oversized or for another group."""


class OutcomeUnknownError(DLedgerError):
    """The write may or may not have been applied (timeout or connection loss after sending)."""


class EntryNotFoundError(DLedgerError, LookupError):
    """The requested index does not exist, or was compacted away."""


@dataclass(frozen=True, slots=True)
class Call:
    """Effect: send `request` to `node_id`'s `method` within `timeout` seconds.

    `must_connect` asks the driver to check that a connection is up before sending, so that a failure to
    connect can be told apart from a failure after sending.
    """

    node_id: str
    method: str
    request: Any
    timeout: float
    must_connect: bool


@dataclass(frozen=True, slots=True)
class Sleep:
    """Effect: wait this many seconds."""

    seconds: float


class RpcOutcome(enum.Enum):
    NOT_CONNECTED = "not connected"  # nothing was sent
    FAILED_AFTER_SEND = "failed after send"  # timeout or broken connection once sent
    REFUSED = "refused by gRPC"  # too large, unimplemented, denied: definitely not processed


class Route:
    """Which node to try next: the known leader, else the peers in turn. Mutable, owned by one client."""

    def __init__(self, peers: Mapping[str, str]) -> None:
        if not peers:
            raise ValueError("a client needs at least one peer")
        self.peers: dict[str, str] = dict(peers)
        self.leader: str | None = None
        self._turn = 0

    def target(self) -> str:
        if self.leader is not None:
            return self.leader
        ids = list(self.peers)
        return ids[self._turn % len(ids)]

    def redirect(self, leader_id: str, leader_address: str) -> bool:
        """Follow a NOT_LEADER hint; returns False when the hint names no usable node."""
        if not leader_id:
            return False
        if leader_id not in self.peers:
            if not leader_address:
                return False
            self.peers[leader_id] = leader_address
        self.leader = leader_id
        return True

    def failed(self, node_id: str) -> None:
        """`node_id` did not take the request: forget it as the leader, and move the turn past it (the next
        node in turn is never the one that just failed, when there is another)."""
        if self.leader == node_id:
            self.leader = None
        self._turn += 1
        ids = list(self.peers)
        if len(ids) > 1 and ids[self._turn % len(ids)] == node_id:
            self._turn += 1


_BACKOFF_START = 0.005
_BACKOFF_MAX = 0.2  # a BUSY leader: back off up to this
_LEADERLESS_MAX = 0.02  # no leader found (an election, most likely): ask again at least this often
_DOWN_MEMORY = 0.1  # a node found unreachable is passed over for this long (gRPC reconnects in the background)


def run_request(
    route: Route,
    method: str,
    request: Any,
    *,
    write: bool,
    timeout: float,
    rpc_timeout: float,
    now: Callable[[], float],
) -> Generator[Call | Sleep, Any, Any]:
    """Yield effects until a reply settles the request; return the reply (a response message with status OK,
    or NOT_FOUND / COMPACTED for reads). Raises the errors above."""
    deadline = now() + timeout
    backoff = _BACKOFF_START
    last_hint = ("", "")
    last_problem = "no node answered"
    down: dict[str, float] = {}  # node -> when this request found it unreachable (since it last answered)

    def recently_down(node: str) -> bool:
        found = down.get(node)
        return found is not None and now() - found < _DOWN_MEMORY

    while True:
        remaining = deadline - now()
        if remaining <= 0:
            if write:
                raise NotLeaderError(f"not written within {timeout:.3g} s: {last_problem}", *last_hint)
            raise DLedgerError(f"no answer within {timeout:.3g} s: {last_problem}")
        node_id = route.target()
        reply = yield Call(node_id, method, request, min(remaining, rpc_timeout), must_connect=write)
        cap = _LEADERLESS_MAX
        if isinstance(reply, RpcOutcome):
            if reply is RpcOutcome.REFUSED:
                raise InvalidRequestError(f"{method} to {node_id} was refused by gRPC (too large or not allowed)")
            if reply is RpcOutcome.FAILED_AFTER_SEND and write:
                route.failed(node_id)  # the next request tries elsewhere (this node may be paused or cut off)
                raise OutcomeUnknownError(f"{method} to {node_id}: no reply after sending; the outcome is unknown")
            last_problem = f"{node_id} {reply.value}"
            if reply is RpcOutcome.NOT_CONNECTED:
                down[node_id] = now()
            route.failed(node_id)
        else:
            down.pop(node_id, None)
            status = reply.status
            if status == pb.STATUS_OK or (not write and status in (pb.STATUS_NOT_FOUND, pb.STATUS_COMPACTED)):
                if write:
                    route.leader = node_id
                return reply
            hint = (getattr(reply, "leader_id", ""), getattr(reply, "leader_address", ""))
            if status == pb.STATUS_NOT_LEADER:
                last_hint = hint
                last_problem = f"{node_id} is not the leader (leader: {hint[0] or 'unknown'})"
                # a hint naming a node just found unreachable is most likely stale (the follower has not yet
                # noticed a dead leader): asking the others again shortly finds the new leader sooner
                if not recently_down(hint[0]) and route.redirect(*hint) and route.leader != node_id:
                    backoff = _BACKOFF_START
                    continue  # go straight to the named leader
                route.failed(node_id)
            elif status in (pb.STATUS_INVALID, pb.STATUS_WRONG_GROUP):
                raise InvalidRequestError(f"{method} refused by {node_id}: {reply.message}")
            elif status in (pb.STATUS_UNAVAILABLE, pb.STATUS_STORAGE_ERROR) and write:
                route.failed(node_id)
                raise OutcomeUnknownError(f"{method} on {node_id}: {reply.message}; the outcome is unknown")
            else:  # BUSY, or a read that met UNAVAILABLE / STORAGE_ERROR: definitely nothing done, retry
                last_problem = f"{node_id}: {pb.Status.Name(status)} {reply.message}"
                route.failed(node_id)
                cap = _BACKOFF_MAX
        for _ in range(len(route.peers) - 1):  # pass over nodes just found down, while another may answer
            if not recently_down(route.target()):
                break
            route.failed(route.target())
        yield Sleep(min(backoff, max(0.0, deadline - now())))
        backoff = min(backoff * 2, cap)
