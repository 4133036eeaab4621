"""`dledger admin --namesrv HOST:PORT --cluster-name C ...`: one admin request on every broker group of a cluster.

RocketMQ's `mqadmin updateTopic -n NAMESRV -c CLUSTER` creates a topic on every broker of a cluster; here the
NameServer names the cluster's groups (GET_BROKER_CLUSTER_INFO: the cluster's broker names) and each group's
RocketMQ 5 endpoints (its master publishes them in the KV config, namespace `GRPC_ENDPOINTS_NAMESPACE`, key =
broker name), and the request goes to each group in turn through `AdminClient` (which follows that group's
master).

Invariants: the NameServer's answers are untrusted: a cluster it does not know, a group without published
endpoints, or a NameServer that does not answer is one `ClusterAdminError` line before any group is asked; a
group that refuses or does not answer is reported by name, and the others are still asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dledger.broker_adapter.admin_client import AdminCallError, AdminClient
from dledger.cli.namesrv_status import NamesrvStatusError, broker_rows, fetch_cluster_info
from dledger.rocketmq.registrar import GRPC_ENDPOINTS_NAMESPACE
from dledger.rocketmq.remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode, invoke

__all__ = ["ClusterAdminError", "GroupAnswer", "call_cluster", "cluster_groups"]


class ClusterAdminError(Exception):
    """The cluster's groups could not be found (one line)."""


@dataclass(frozen=True, slots=True)
class GroupAnswer:
    """One group's answer object (`{"ok": ...}`), or `error`: why no replica of it answered."""

    broker_name: str
    answer: dict[str, Any] | None
    error: str = ""


def _endpoints(value: str) -> list[str]:
    out = []
    for address in value.split(";"):
        host, sep, port = address.strip().rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            out.append(f"{host}:{port}")
    return out


def _kv(namesrv: Sequence[str], key: str, timeout: float) -> str | None:
    """The group `key`'s published endpoints from the first NameServer that has them."""
    fields = {"namespace": GRPC_ENDPOINTS_NAMESPACE, "key": key}
    for addr in namesrv:
        try:
            r = asyncio.run(invoke(addr, RemotingCommand.request(RequestCode.GET_KV_CONFIG, fields), timeout))
        except RemotingError:
            continue
        if r.code == ResponseCode.SUCCESS and r.ext("value"):
            return r.ext("value")
    return None


def cluster_groups(namesrv: str, cluster: str, timeout: float = 3.0) -> dict[str, list[str]]:
    """{broker name: its RocketMQ 5 endpoints} for every group of `cluster`, as the NameServer knows them."""
    try:
        rows = broker_rows(fetch_cluster_info(namesrv, timeout))
    except NamesrvStatusError as exc:
        raise ClusterAdminError(str(exc)) from None
    names = sorted({r.broker_name for r in rows if r.cluster == cluster})
    if not names:
        known = sorted({r.cluster for r in rows})
        raise ClusterAdminError(f"the name server knows no cluster {cluster!r} (it knows {known or 'none'})")
    addrs = [a.strip() for a in namesrv.split(";") if a.strip()]
    groups: dict[str, list[str]] = {}
    for name in names:
        endpoints = _endpoints(_kv(addrs, name, timeout) or "")
        if not endpoints:
            raise ClusterAdminError(f"group {name!r} of cluster {cluster!r} has published no RocketMQ 5 endpoints")
        groups[name] = endpoints
    return groups


def call_cluster(
    groups: dict[str, list[str]],
    request: dict[str, Any],
    *,
    token: str | None,
    timeout: float,
    credentials: tuple[str, str] | None = None,
) -> list[GroupAnswer]:
    """`request` on every group, in broker-name order."""
    answers = []
    for name, endpoints in sorted(groups.items()):
        try:
            with AdminClient(endpoints, token=token, timeout=timeout, credentials=credentials) as client:
                answers.append(GroupAnswer(name, client.call(request)))
        except AdminCallError as exc:
            answers.append(GroupAnswer(name, None, str(exc)))
    return answers
