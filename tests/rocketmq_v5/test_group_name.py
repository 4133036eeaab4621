"""A broker group named as RocketMQ users name brokers (`dLegerGroup=broker-a`) serves sends and receives."""

from __future__ import annotations

import pathlib

import pytest

from dledger.cli.broker import LocalBrokerGroup
from tests.rocketmq_v5.util import drain, message, producer, send_eventually, simple_consumer

pytestmark = pytest.mark.process


def test_a_group_named_broker_a_sends_and_receives(tmp_path: pathlib.Path) -> None:
    g = LocalBrokerGroup.create(tmp_path, 1, group="broker-a", extra={"consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"})
    g.start_all()
    try:
        with producer(g, ("named",)) as p:
            sent = send_eventually(p, message("named", b"hello")).message_id
        with simple_consumer(g, "g-named", "named") as c:
            got = drain(c, {sent})
        assert got[sent].body == b"hello"
        assert (tmp_path / "n0.conf").read_text().count("broker-a") == 2  # dLegerGroup and brokerName
    finally:
        g.stop_all()
