"""A 3-replica broker group of real `dledger broker` processes, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dledger.broker_adapter.broker_cli import LocalBrokerGroup
from tests.broker_endpoint.util import message, producer, send_eventually


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokerGroup]:
    g = LocalBrokerGroup.create(
        tmp_path_factory.mktemp("brokers"),
        # the tests on this group send before their consumer group's first receive: they start at offset 0
        extra={
            "transactionTimeOut": "1000",
            "transactionCheckInterval": "1000",
            "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
        },
    )
    g.start_all()
    try:
        with producer(g) as p:
            send_eventually(p, message("warmup", b"w"))
        yield g
    finally:
        g.stop_all()
