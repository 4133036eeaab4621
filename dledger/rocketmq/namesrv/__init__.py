"""dledger's NameServer: RocketMQ's route registry, in memory.

`routes`: the route table (pure). `kvconfig`: the KV config. `bodies`: RocketMQ's request and response
bodies. `processor`: one request in, one response out. `server`: the processor on a remoting server with
the scan for silent brokers. `cli`: `dledger namesrv`.
"""

from dledger.rocketmq.namesrv.processor import NameServerProcessor
from dledger.rocketmq.namesrv.routes import MASTER_ID, RouteTable, TopicQueues
from dledger.rocketmq.namesrv.server import DEFAULT_PORT, NameServer

__all__ = ["DEFAULT_PORT", "MASTER_ID", "NameServer", "NameServerProcessor", "RouteTable", "TopicQueues"]
