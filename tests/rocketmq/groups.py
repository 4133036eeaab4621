"""A started 2-group broker cluster (NameServer + 2 x 3 replicas, registering every second) for tests."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

from dledger.cli.broker_groups import LocalBrokerCluster

FROM_FIRST = {"consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"}  # a consumer that starts after the sends


@contextlib.contextmanager
def started_cluster(root: pathlib.Path, extra: dict[str, str] | None = None) -> Iterator[LocalBrokerCluster]:
    """Start every process, fail the test if one did not start, stop them all afterwards."""
    c = LocalBrokerCluster.create(root, 2, period_ms=1000, extra=extra)
    try:
        failed = c.start_all()
        assert not failed, failed
        yield c
    finally:
        c.stop_all()
