"""The NameServer's route table (RocketMQ's `RouteInfoManager`), pure: no I/O, the time passed in.

State, all in memory (a NameServer keeps no disk state; brokers re-register every period):
- brokers: broker name -> `BrokerData` (cluster, name, broker id -> address; id 0 is the master)
- clusters: cluster name -> broker names
- live: (cluster, address) -> `BrokerLive` (last heard, heartbeat timeout, data version, HA address, the
  connection it registered over)
- topics: topic -> broker name -> `QueueData` (queue counts, permission, system flag)

Invariants:
- An address appears under at most one broker id of its broker name: a broker that registers its address
  with a new id (a slave becoming master, or the reverse) loses its old id first, as in RocketMQ.
- Only a master (id 0) registration sets a broker name's queue data; registrations of the same data
  version change nothing but the liveness.
- `expire(now)` drops every broker not heard from for its heartbeat timeout (120 s unless the broker said
  otherwise); `connection_closed` drops the brokers that registered over that connection. Dropping a
  broker removes its address; a broker name left with no address leaves its cluster and every topic.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_BROKER_TIMEOUT_MS",
    "MASTER_ID",
    "BrokerData",
    "BrokerLive",
    "QueueData",
    "RouteTable",
    "TopicQueues",
]

MASTER_ID = 0
#: RocketMQ's DEFAULT_BROKER_CHANNEL_EXPIRED_TIME: a broker silent this long is dropped
DEFAULT_BROKER_TIMEOUT_MS = 120_000
PERM_READ_WRITE = 6


@dataclass(frozen=True, slots=True)
class TopicQueues:
    """One topic as a broker registers it (a TopicConfig's route-relevant fields)."""

    name: str
    read_queues: int = 8
    write_queues: int = 8
    perm: int = PERM_READ_WRITE
    sys_flag: int = 0
    order: bool = False


@dataclass(frozen=True, slots=True)
class QueueData:
    broker_name: str
    read_queues: int
    write_queues: int
    perm: int
    sys_flag: int

    def to_json(self) -> dict[str, object]:
        return {
            "brokerName": self.broker_name,
            "perm": self.perm,
            "readQueueNums": self.read_queues,
            "topicSysFlag": self.sys_flag,
            "writeQueueNums": self.write_queues,
        }


@dataclass(slots=True)
class BrokerData:
    cluster: str
    name: str
    addrs: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "brokerAddrs": dict(sorted(self.addrs.items())),
            "brokerName": self.name,
            "cluster": self.cluster,
        }


@dataclass(slots=True)
class BrokerLive:
    last_update_ms: int
    timeout_ms: int
    data_version: tuple[int, int]
    ha_addr: str | None
    connection: Hashable | None


@dataclass(frozen=True, slots=True)
class RegisterResult:
    master_addr: str | None
    ha_addr: str | None


class RouteTable:
    """RocketMQ's route registry; every method takes the current time in ms where it matters."""

    def __init__(self) -> None:
        self.brokers: dict[str, BrokerData] = {}
        self.clusters: dict[str, set[str]] = {}
        self.live: dict[tuple[str, str], BrokerLive] = {}
        self.topics: dict[str, dict[str, QueueData]] = {}

    # ---- brokers ----
    def register(
        self,
        *,
        cluster: str,
        addr: str,
        name: str,
        broker_id: int,
        now_ms: int,
        topics: Iterable[TopicQueues] | None = None,
        data_version: tuple[int, int] = (0, 0),
        ha_addr: str | None = None,
        timeout_ms: int = DEFAULT_BROKER_TIMEOUT_MS,
        connection: Hashable | None = None,
    ) -> RegisterResult:
        self.clusters.setdefault(cluster, set()).add(name)
        data = self.brokers.get(name)
        if data is None:
            data = self.brokers[name] = BrokerData(cluster, name)
        data.cluster = cluster
        was_master = data.addrs.get(MASTER_ID) == addr
        for old_id in [i for i, a in data.addrs.items() if a == addr and i != broker_id]:
            del data.addrs[old_id]
        data.addrs[broker_id] = addr
        previous = self.live.get((cluster, addr))
        # a master's topics apply when it is new as master or its data version moved
        changed = not was_master or previous is None or previous.data_version != data_version
        if broker_id == MASTER_ID and topics is not None and changed:
            for t in topics:
                self.topics.setdefault(t.name, {})[name] = QueueData(
                    name, t.read_queues, t.write_queues, t.perm, t.sys_flag
                )
        self.live[(cluster, addr)] = BrokerLive(
            now_ms, timeout_ms if timeout_ms > 0 else DEFAULT_BROKER_TIMEOUT_MS, data_version, ha_addr, connection
        )
        if broker_id == MASTER_ID:
            return RegisterResult(None, None)
        master = data.addrs.get(MASTER_ID)
        master_live = self.live.get((cluster, master)) if master else None
        return RegisterResult(master, master_live.ha_addr if master_live else None)

    def heartbeat(self, cluster: str, addr: str, now_ms: int) -> bool:
        """Refresh a registered broker's liveness; False when it is not registered."""
        live = self.live.get((cluster, addr))
        if live is None:
            return False
        live.last_update_ms = now_ms
        return True

    def data_version(self, cluster: str, addr: str) -> tuple[int, int] | None:
        live = self.live.get((cluster, addr))
        return live.data_version if live else None

    def unregister(self, cluster: str, addr: str, name: str, broker_id: int) -> None:
        self.live.pop((cluster, addr), None)
        data = self.brokers.get(name)
        if data is not None and data.addrs.get(broker_id) == addr:
            del data.addrs[broker_id]
        self._drop_if_empty(name)

    def expire(self, now_ms: int) -> list[tuple[str, str]]:
        """Drop brokers silent beyond their timeout; the (cluster, address) pairs dropped."""
        dead = [key for key, live in self.live.items() if now_ms - live.last_update_ms > live.timeout_ms]
        for key in dead:
            self._drop_addr(*key)
        return dead

    def connection_closed(self, connection: Hashable) -> list[tuple[str, str]]:
        """Drop the brokers that registered over `connection` (RocketMQ's channel-destroy)."""
        gone = [key for key, live in self.live.items() if live.connection == connection]
        for key in gone:
            self._drop_addr(*key)
        return gone

    def _drop_addr(self, cluster: str, addr: str) -> None:
        self.live.pop((cluster, addr), None)
        for name in list(self.clusters.get(cluster, ())):
            data = self.brokers.get(name)
            if data is None:
                continue
            for broker_id in [i for i, a in data.addrs.items() if a == addr]:
                del data.addrs[broker_id]
            self._drop_if_empty(name)

    def _drop_if_empty(self, name: str) -> None:
        data = self.brokers.get(name)
        if data is None or data.addrs:
            return
        del self.brokers[name]
        names = self.clusters.get(data.cluster)
        if names is not None:
            names.discard(name)
            if not names:
                del self.clusters[data.cluster]
        for topic in list(self.topics):
            self.topics[topic].pop(name, None)
            if not self.topics[topic]:
                del self.topics[topic]

    # ---- topics ----
    def route(self, topic: str) -> dict[str, object] | None:
        """TopicRouteData's fields for `topic`, or None when no live broker serves it."""
        queues = self.topics.get(topic)
        if not queues:
            return None
        brokers = [self.brokers[n].to_json() for n in sorted(queues) if n in self.brokers]
        if not brokers:
            return None
        return {
            "brokerDatas": brokers,
            "filterServerTable": {},
            "queueDatas": [queues[n].to_json() for n in sorted(queues)],
        }

    def cluster_info(self) -> dict[str, object]:
        return {
            "brokerAddrTable": {n: d.to_json() for n, d in sorted(self.brokers.items())},
            "clusterAddrTable": {c: sorted(names) for c, names in sorted(self.clusters.items())},
        }

    def topic_names(self) -> list[str]:
        return sorted(self.topics)

    def topics_of_cluster(self, cluster: str) -> list[str]:
        names = self.clusters.get(cluster, set())
        return sorted(t for t, queues in self.topics.items() if names & queues.keys())

    def delete_topic(self, topic: str, cluster: str | None = None) -> None:
        """Forget a topic everywhere, or only on the brokers of `cluster`."""
        if not cluster:
            self.topics.pop(topic, None)
            return
        queues = self.topics.get(topic)
        if queues is None:
            return
        for name in self.clusters.get(cluster, ()):
            queues.pop(name, None)
        if not queues:
            del self.topics[topic]
