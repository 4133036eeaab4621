"""`dledger status --namesrv ADDR`: the clusters, broker names and broker addresses a NameServer knows.

Asks the NameServer for GET_BROKER_CLUSTER_INFO and shows one row per broker address: cluster, broker name,
broker id (0 is the master, the replica leading its dLedger group) and address, as a table or as JSON
(`--json`). Several `;`-separated NameServers are tried in order until one answers.

Invariants: the NameServer's answer is untrusted input: a body that is not the cluster-info shape raises
`NamesrvStatusError` with one line, as does a NameServer that cannot be reached or answers an error code;
nothing here raises anything else for bad input.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from dledger.rocketmq.remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode, fastjson, invoke

__all__ = ["BrokerRow", "NamesrvStatusError", "broker_rows", "fetch_cluster_info", "format_broker_table"]

MASTER_ID = 0


class NamesrvStatusError(Exception):
    """The NameServer could not be asked, or answered something that is not cluster info (one line)."""


@dataclass(frozen=True, slots=True)
class BrokerRow:
    cluster: str
    broker_name: str
    broker_id: int
    address: str

    @property
    def role(self) -> str:
        if self.broker_id < 0:
            return "none"  # a broker name with no address registered
        return "master" if self.broker_id == MASTER_ID else "slave"

    def to_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "brokerName": self.broker_name,
            "brokerId": self.broker_id,
            "role": self.role,
            "address": self.address,
        }


def fetch_cluster_info(namesrv: str, timeout: float = 3.0) -> Any:
    """GET_BROKER_CLUSTER_INFO from the first NameServer of `namesrv` (`host:port;host:port`) that answers."""
    addrs = [a.strip() for a in namesrv.split(";") if a.strip()]
    if not addrs:
        raise NamesrvStatusError("--namesrv: give host:port (several separated by ';')")
    why = ""
    for addr in addrs:
        try:
            r = asyncio.run(invoke(addr, RemotingCommand.request(RequestCode.GET_BROKER_CLUSTER_INFO), timeout))
        except RemotingError as exc:
            why = f"name server {addr}: {exc}"
            continue
        if r.code != ResponseCode.SUCCESS:
            why = f"name server {addr} answered code {r.code}: {r.remark or 'no remark'}"
            continue
        try:
            return fastjson.loads(r.body or b"{}")
        except ValueError as exc:
            why = f"name server {addr}: cluster info is not JSON ({exc})"
    raise NamesrvStatusError(why)


def broker_rows(info: Any) -> list[BrokerRow]:
    """The rows of a cluster-info body, sorted by cluster, broker name and broker id."""
    if not isinstance(info, dict):
        raise NamesrvStatusError("cluster info is not a JSON object")
    brokers = info.get("brokerAddrTable", {})
    clusters = info.get("clusterAddrTable", {})
    if not isinstance(brokers, dict) or not isinstance(clusters, dict):
        raise NamesrvStatusError("cluster info: brokerAddrTable and clusterAddrTable must be objects")
    cluster_of: dict[str, str] = {}
    for cluster, names in clusters.items():
        if not isinstance(names, list):
            raise NamesrvStatusError(f"cluster info: the broker names of cluster {cluster!r} are not a list")
        cluster_of.update({str(n): str(cluster) for n in names})
    rows: list[BrokerRow] = []
    for name, data in brokers.items():
        if not isinstance(data, dict) or not isinstance(data.get("brokerAddrs", {}), dict):
            raise NamesrvStatusError(f"cluster info: broker {name!r} has no brokerAddrs object")
        cluster = str(data.get("cluster") or cluster_of.get(str(name), "-"))
        for broker_id, address in data.get("brokerAddrs", {}).items():
            try:
                number = int(broker_id)
            except (TypeError, ValueError):
                raise NamesrvStatusError(f"cluster info: broker {name!r} has id {broker_id!r}, not a number") from None
            rows.append(BrokerRow(cluster, str(name), number, str(address)))
    for name, cluster in cluster_of.items():  # a broker name listed in a cluster but with no addresses left
        if name not in brokers:
            rows.append(BrokerRow(cluster, name, -1, "-"))
    return sorted(rows, key=lambda r: (r.cluster, r.broker_name, r.broker_id))


def format_broker_table(rows: list[BrokerRow]) -> str:
    header = ("CLUSTER", "BROKER NAME", "BROKER ID", "ROLE", "ADDRESS")
    table = [header] + [
        (r.cluster, r.broker_name, str(r.broker_id) if r.broker_id >= 0 else "-", r.role, r.address) for r in rows
    ]
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)
