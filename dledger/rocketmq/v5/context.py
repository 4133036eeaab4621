"""What every handler of the RocketMQ 5 gRPC face shares: `ServiceContext` (the replica's store, its endpoint
config, the apply notifier, the link to the leader's endpoint) with the plumbing of every RPC: authentication
(`denied`), the client's deadline and the write path (`write`: run on the master, or forward once to the
leader); and the small proto helpers (`status`, `ms`, `now_ts`).

Invariants: `write` answers before the client's deadline; a write is forwarded only over a connected channel
and at most once with an unknown fate (see `ServiceContext.write`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc.aio
from google.protobuf import timestamp_pb2
from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]

from dledger.broker_adapter.signature import check_signature
from dledger.broker_adapter.store import MessageStore
from dledger.rocketmq.v5.codes import Code
from dledger.rocketmq.v5.config import EndpointConfig
from dledger.rocketmq.v5.support import FORWARDED, ApplyNotifier, LeaderLink, client_metadata

__all__ = [
    "FORWARDED_WAIT_S",
    "MAX_INVISIBLE_MS",
    "WRITE_WAIT_S",
    "NotMaster",
    "ServiceContext",
    "ms",
    "now_ts",
    "status",
]

R = TypeVar("R")

WRITE_WAIT_S = 3.0  # how long a write waits for a leader (within the client's deadline)
FORWARDED_WAIT_S = 1.0  # how long a forwarded write waits for this replica to become master
MAX_INVISIBLE_MS = 12 * 3600 * 1000


def status(code: int, message: str = "") -> Any:
    return d.Status(code=code, message=message or d.Code.Name(code))


def ms(duration: Any) -> int:
    return int(duration.seconds) * 1000 + int(duration.nanos) // 1_000_000


class NotMaster(Exception):
    """This replica cannot do the write now; the caller may forward it or wait."""


def now_ts() -> Any:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class ServiceContext:
    """One replica's side of the service: its store, endpoint config, apply notifier and leader link."""

    def __init__(self, store: MessageStore, config: EndpointConfig, notifier: ApplyNotifier) -> None:
        self.store = store
        self.config = config
        self.notifier = notifier
        self.link = LeaderLink(config.endpoints, config.self_id)
        self.route_endpoints = _endpoints(config.endpoints.values(), config.address)

    def denied(self, context: Any) -> Any | None:
        """A status when the request fails authentication (or has no client id), else None."""
        if self.config.access_key:
            md = context.invocation_metadata() or ()
            why = check_signature(md, self.config.access_key, self.config.secret_key)
            if why:
                return status(Code.UNAUTHORIZED, why)
        return None

    @staticmethod
    def forwarded(context: Any) -> bool:
        return FORWARDED in client_metadata(context.invocation_metadata() or ())

    def deadline(self, context: Any) -> float:
        remaining = context.time_remaining()
        return time.monotonic() + (remaining - 0.2 if remaining is not None else 30.0)

    async def write(
        self,
        context: Any,
        local: Callable[[], Awaitable[R]],
        forward: Callable[[Any, list[tuple[str, str]], float], Awaitable[R]],
        fail: Callable[[int, str], R],
    ) -> R:
        """Run `local` on the master, or forward to the leader, waiting for one within bounds.

        A forwarded request that reaches a replica which is not master fails fast when that replica knows
        another leader (the forwarder then tries the new leader), and otherwise waits at most
        `FORWARDED_WAIT_S` for itself to become master, so the forwarder keeps time for another try.

        A request is forwarded only over a connected channel, and at most once with an unknown fate: when a
        forward fails after it was sent (the leader died or stalled mid-call), the entry may be committed,
        so the answer is SLAVE_PERSISTENCE_TIMEOUT (outcome unknown), never HA_NOT_AVAILABLE ("nothing was
        written"), and the request is not forwarded again (that stored one send twice; jepsen_like found it)."""
        deadline = self.deadline(context)
        forwarded = self.forwarded(context)
        give_up = min(deadline, time.monotonic() + (FORWARDED_WAIT_S if forwarded else WRITE_WAIT_S))
        why = "no leader is known"
        while True:
            leader = self.store.server.leader_id if self.store.server else None
            if self.store.is_master:
                try:
                    return await local()
                except NotMaster as exc:
                    why = str(exc)
            elif forwarded:
                why = "forwarded here, but this replica is not the master"
                if leader and leader != self.config.self_id:
                    return fail(Code.HA_NOT_AVAILABLE, f"{why}; the leader is {leader}")
            elif leader and leader != self.config.self_id:
                if not await self.link.connected(leader, min(0.5, max(give_up - time.monotonic(), 0.0))):
                    why = f"the leader {leader} is not reachable from here"  # nothing was sent
                else:
                    try:
                        md = LeaderLink.metadata(context.invocation_metadata() or ())
                        out = await forward(self.link.stub(leader), md, max(deadline - time.monotonic(), 0.1))
                    except grpc.aio.AioRpcError as exc:
                        return fail(
                            Code.SLAVE_PERSISTENCE_TIMEOUT,
                            f"forwarding to the leader {leader} failed after sending ({exc.code().name}): "
                            "the outcome is unknown",
                        )
                    if _code(out) != Code.HA_NOT_AVAILABLE or time.monotonic() >= give_up:
                        return out
                    why = f"the leader {leader} was not master"  # it said so: nothing was written
            if time.monotonic() >= give_up:
                return fail(Code.HA_NOT_AVAILABLE, why)
            await asyncio.sleep(0.02)


def _code(response: Any) -> int:
    """The status code of a unary response, or of the first message of a streamed one (a list)."""
    if isinstance(response, list):
        return int(response[0].status.code) if response and response[0].HasField("status") else int(Code.OK)
    return int(response.status.code)


def _endpoints(addresses: Any, own: str) -> Any:
    """One `Endpoints` with every replica (IPv4 / IPv6), so the client's channel fails over between them."""
    eps = d.Endpoints()
    hosts = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        hosts.append(host)
        eps.addresses.add(host=host, port=int(port))
    try:
        versions = {ipaddress.ip_address(h).version for h in hosts}
    except ValueError:
        versions = set()
    if versions == {4}:
        eps.scheme = d.AddressScheme.IPv4
    elif versions == {6}:
        eps.scheme = d.AddressScheme.IPv6
    else:  # a DNS name: the clients take one address only, so this replica's
        host, _, port = own.rpartition(":")
        eps = d.Endpoints(scheme=d.AddressScheme.DOMAIN_NAME)
        eps.addresses.add(host=host.strip("[]"), port=int(port))
    return eps
