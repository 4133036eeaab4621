"""The remoting face's settings from broker.conf: RocketMQ's ranges, and a bad value named by its key."""

from __future__ import annotations

import pytest

from dledger.node.config import ConfigError
from dledger.rocketmq.broker.config import RemotingConfig


def test_a_large_max_reconsume_times_is_taken_as_rocketmq_takes_it() -> None:
    # the gRPC face reads the same key as its delivery attempts; both accept what a Java int holds
    assert RemotingConfig.from_properties({"maxReconsumeTimes": "100000"}).max_reconsume_times == 100000


@pytest.mark.parametrize(
    ("props", "said"),
    [
        ({"listenPort": "70000"}, "listenPort=70000 is not in 0..65535"),
        ({"maxReconsumeTimes": "-1"}, "maxReconsumeTimes=-1 is not in"),
        ({"transactionTimeOut": "soon"}, "transactionTimeOut='soon' is not a whole number"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(props: dict[str, str], said: str) -> None:
    with pytest.raises(ConfigError) as err:
        RemotingConfig.from_properties(props)
    assert said in str(err.value) and "\n" not in str(err.value)
