"""A 3-replica broker group of real `dledger broker` processes, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dledger.cli.broker import LocalBrokerGroup
from tests.rocketmq_v5.util import running_group


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokerGroup]:
    # the tests on this group send before their consumer group's first receive: they start at offset 0
    extra = {
        "transactionTimeOut": "1000",
        "transactionCheckInterval": "1000",
        "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
    }
    yield from running_group(tmp_path_factory.mktemp("brokers"), extra)
