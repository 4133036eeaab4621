"""Prometheus metrics of one node, in a registry of its own (several nodes may share a process).

Gauges and counters are read from the node when scraped (nothing on the hot path); only the request
latency histograms are observed as requests complete, by the client service. Names start with `dledger_`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dledger.node.node import RaftNode

__all__ = ["ROLES", "NodeMetrics"]

ROLES = ("follower", "pre_candidate", "candidate", "leader", "fenced", "stopped")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _NodeCollector(Collector):
    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        node, core = self.node, self.node.core
        labels = [node.config.group, node.config.self_id]
        names = ["group", "node"]
        role = GaugeMetricFamily("dledger_role", "1 for the node's current role", labels=[*names, "role"])
        for r in ROLES:
            role.add_metric([*labels, r], 1.0 if node.role == r else 0.0)
        yield role
        status = node.node_status()
        for name, value, doc in (
            ("dledger_term", status.term, "current term"),
            ("dledger_last_index", status.last_index, "last log index"),
            ("dledger_commit_index", status.commit_index, "commit index"),
            ("dledger_applied_index", status.applied_index, "last index applied to the state machines"),
            ("dledger_first_index", status.first_index, "first index still in the log"),
            ("dledger_healthy", 1.0 if status.healthy else 0.0, "1 when the node knows a leader and can write"),
            (
                "dledger_recovering_until",
                status.recovering_until,
                "while recovering (no votes): the index its log must reach again; 0 otherwise",
            ),
        ):
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(labels, float(value))
            yield g
        stats = node.stats
        for name, value, doc in (
            ("dledger_role_changes", stats.role_changes, "role or leader changes seen"),
            ("dledger_readies", stats.readies, "Ready batches processed"),
            ("dledger_entries_persisted", stats.entries_persisted, "entries written to the local log"),
            ("dledger_bytes_persisted", stats.bytes_persisted, "entry payload bytes written to the local log"),
            ("dledger_elections", stats.elections, "times this node became a candidate"),
            ("dledger_leader_changes", stats.leader_changes, "times the leader this node knows of changed"),
            ("dledger_peer_decode_errors", stats.decode_errors, "peer messages that could not be decoded"),
            ("dledger_repairs", stats.repairs, "storage damage found while running and repaired in place"),
        ):
            c = CounterMetricFamily(name, doc, labels=names)
            c.add_metric(labels, float(value))
            yield c
        if core is not None:
            dropped = CounterMetricFamily(
                "dledger_messages_dropped", "messages the core dropped, by reason", labels=[*names, "reason"]
            )
            for reason, count in sorted(core.dropped.items()):
                dropped.add_metric([*labels, reason], float(count))
            yield dropped
        transport = node.transport
        if transport is not None:
            sent = CounterMetricFamily("dledger_transport_events", "peer transport events", labels=[*names, "event"])
            for event, count in sorted(transport.stats.items()):
                sent.add_metric([*labels, event], float(count))
            yield sent


class NodeMetrics:
    """The node's registry, its request histograms, and (optionally) the HTTP endpoint serving it."""

    def __init__(self, node: RaftNode) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_NodeCollector(node))
        self.append_latency = Histogram(
            "dledger_append_latency_seconds",
            "client append: request received -> committed and applied (or refused)",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.read_index_latency = Histogram(
            "dledger_read_index_latency_seconds",
            "linearizable read index: request -> leadership confirmed and applied",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "dledger_commit_latency_seconds",
            "leader: proposal -> committed on a quorum and applied here",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        node.commit_observer = self.commit_latency.observe
        self.appended_entries = Histogram(
            "dledger_append_batch_entries",
            "entries per client append request",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=self.registry,
        )
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics on `host:port` (0 picks a free port); returns the port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._thread = server, thread
        return int(server.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
