"""The other broker groups of a cluster, as the NameServers know them: what QueryRoute and QueryAssignment
add to this group's own queues when the broker registers with NameServers.

Each group's master publishes its replicas' RocketMQ 5 endpoints in the NameServer's KV config (namespace
`GRPC_ENDPOINTS_NAMESPACE`, key = broker name, value = `host:port;host:port;...`); a topic's route
(GET_ROUTEINFO_BY_TOPIC) names the groups that hold it and their queue counts. A queue of another group is
returned with that group's own endpoints, so a client sends to, and receives from, the group that holds the
queue directly (no forwarding between groups).

Invariants: a lookup never raises and never waits longer than `timeout`: a NameServer that does not answer
leaves the route to this group's own queues; answers are cached for `ttl` seconds (a client asks every 30 s);
only groups with a master (broker id 0) in the route and published endpoints are added.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]

from dledger.rocketmq.registrar import GRPC_ENDPOINTS_NAMESPACE
from dledger.rocketmq.remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode, fastjson, invoke

__all__ = ["ClusterRoutes", "GroupQueues", "endpoints_of"]

PERM_READ, PERM_WRITE = 4, 2


@dataclass(frozen=True, slots=True)
class GroupQueues:
    broker_name: str
    queues: int
    perm: int
    endpoints: tuple[str, ...]


def endpoints_of(addresses: Sequence[str]) -> Any:
    """One `Endpoints` message for `host:port` addresses (IPv4, IPv6 or one domain name)."""
    eps = d.Endpoints()
    versions: set[int] = set()
    for address in addresses:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        eps.addresses.add(host=host, port=int(port))
        try:
            versions.add(ipaddress.ip_address(host).version)
        except ValueError:
            versions.add(0)
    if versions == {4}:
        eps.scheme = d.AddressScheme.IPv4
    elif versions == {6}:
        eps.scheme = d.AddressScheme.IPv6
    else:
        eps = d.Endpoints(scheme=d.AddressScheme.DOMAIN_NAME, addresses=eps.addresses[:1])
    return eps


def _valid_addresses(value: str) -> tuple[str, ...]:
    out = []
    for address in value.split(";"):
        host, sep, port = address.strip().rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            out.append(f"{host}:{port}")
    return tuple(out)


class ClusterRoutes:
    """Looks up the other groups holding a topic through the NameServers at `namesrv_addrs`."""

    def __init__(self, namesrv_addrs: Sequence[str], own_broker_name: str, *, ttl: float = 1.0, timeout: float = 1.0):
        self.namesrv_addrs = tuple(namesrv_addrs)
        self.own = own_broker_name
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, list[GroupQueues]]] = {}

    async def other_groups(self, topic: str) -> list[GroupQueues]:
        hit = self._cache.get(topic)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        try:
            groups = await asyncio.wait_for(self._lookup(topic), self.timeout)
        except (RemotingError, ValueError, TimeoutError):
            groups = hit[1] if hit is not None else []
        self._cache[topic] = (time.monotonic(), groups)
        if len(self._cache) > 4096:
            self._cache.clear()
        return groups

    async def _ask(self, code: int, fields: dict[str, str]) -> RemotingCommand:
        last: Exception = RemotingError("no name server configured")
        for addr in self.namesrv_addrs:
            try:
                return await invoke(addr, RemotingCommand.request(code, fields), timeout=self.timeout)
            except RemotingError as exc:
                last = exc
        raise last

    async def _lookup(self, topic: str) -> list[GroupQueues]:
        r = await self._ask(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic, "acceptStandardJsonOnly": "true"})
        if r.code != ResponseCode.SUCCESS:
            return []
        route = fastjson.loads(r.body)
        if not isinstance(route, dict):
            return []
        masters = {
            b.get("brokerName")
            for b in route.get("brokerDatas") or []
            if isinstance(b, dict) and "0" in (b.get("brokerAddrs") or {})
        }
        groups = []
        for q in route.get("queueDatas") or []:
            if not isinstance(q, dict):
                continue
            name = q.get("brokerName")
            if not isinstance(name, str) or name == self.own or name not in masters:
                continue
            kv = await self._ask(RequestCode.GET_KV_CONFIG, {"namespace": GRPC_ENDPOINTS_NAMESPACE, "key": name})
            endpoints = _valid_addresses(kv.ext("value") or "") if kv.code == ResponseCode.SUCCESS else ()
            count, perm = q.get("writeQueueNums"), q.get("perm")
            if endpoints and isinstance(count, int) and 0 < count <= 1024 and isinstance(perm, int):
                groups.append(GroupQueues(name, count, perm, endpoints))
        return groups
