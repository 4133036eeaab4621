"""Prometheus metrics of the message store per topic and consumer group, read from its tables when scraped.

Registered on the node's registry (`NodeMetrics.registry`, served on `dledgerMetricsPort`), so a broker
replica exposes these beside the node's `dledger_*` metrics:

| metric | labels | meaning |
| --- | --- | --- |
| `dledger_broker_messages_in_total` | topic | messages enqueued (the sum of the topic's queue offsets) |
| `dledger_broker_messages_out_total` | group, topic | first deliveries to the group |
| `dledger_broker_retries_total` | group, topic | redeliveries (a delivery attempt after the first) |
| `dledger_broker_acks_total` | group, topic | acknowledged deliveries |
| `dledger_broker_dlq_total` | group, topic | messages moved to the group's dead-letter topic |
| `dledger_broker_lag` | group, topic | messages the group has not received yet (queues it has a position on) |
| `dledger_broker_inflight` | group, topic | delivered, not yet acknowledged |

Invariants: everything is replicated state (the same on every replica up to its applied index), nothing is
counted on the hot path; a scrape that meets the tables while they are replaced (a snapshot restore) or
closed yields no broker metrics for that scrape instead of failing it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import lmdb
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dledger.broker_adapter import admin_read
from dledger.broker_adapter.store import MessageStore

__all__ = ["BrokerCollector"]

log = logging.getLogger(__name__)


class BrokerCollector(Collector):
    def __init__(self, store: MessageStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        try:
            families = self._families()
        except (lmdb.Error, AttributeError) as exc:  # tables being replaced or closed
            log.debug("broker metrics skipped: %r", exc)
            return
        yield from families

    def _families(self) -> list[Any]:
        tables = self.store.tables
        if tables.env is None:
            return []
        received = CounterMetricFamily("dledger_broker_messages_in", "messages enqueued per topic", labels=["topic"])
        for topic, count in sorted(admin_read.messages_in(tables).items()):
            received.add_metric([topic], float(count))
        stats = admin_read.all_stats(tables)
        names = ["group", "topic"]
        counters = {
            "delivered": CounterMetricFamily("dledger_broker_messages_out", "first deliveries", labels=names),
            "redelivered": CounterMetricFamily("dledger_broker_retries", "redeliveries", labels=names),
            "acked": CounterMetricFamily("dledger_broker_acks", "acknowledged deliveries", labels=names),
            "dead_lettered": CounterMetricFamily("dledger_broker_dlq", "messages dead-lettered", labels=names),
        }
        lag = GaugeMetricFamily("dledger_broker_lag", "messages not yet received by the group", labels=names)
        inflight = GaugeMetricFamily("dledger_broker_inflight", "delivered, not yet acknowledged", labels=names)
        for (group, topic), row in sorted(stats.items()):
            for field, family in counters.items():
                family.add_metric([group, topic], float(getattr(row, field)))
            rows = admin_read.progress(tables, group, topic)
            lag.add_metric([group, topic], float(sum(r.lag for r in rows)))
            inflight.add_metric([group, topic], float(sum(r.inflight for r in rows)))
        return [received, *counters.values(), lag, inflight]
