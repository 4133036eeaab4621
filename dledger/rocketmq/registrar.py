"""A broker replica registering itself with every NameServer (RocketMQ's `registerBrokerAll`).

Reads RocketMQ's broker keys: `brokerClusterName` (default DefaultCluster), `brokerName`, `namesrvAddr`
(`;`-separated NameServers), `brokerIP1` and `listenPort` (the address registered: `brokerIP1:listenPort`;
brokerIP1 defaults to the host of the replica's own dLeger peer address, listenPort to 10911) and
`registerNameServerPeriod` (ms between registrations, default 30000).

Broker ids follow RocketMQ 4.5+'s DLedger mode: the replica that leads registers as broker id 0 (the
master); every other replica as its own fixed slave id, 1 + its position among the group's node ids in
sorted order (n0 -> 1, n1 -> 2, n2 -> 3, as RocketMQ derives it from `dLegerSelfId`). Slave ids never
depend on who leads, so two replicas never claim the same slave id and a leader change moves only id 0.

Invariants:
- A registration goes to every NameServer each period, and at once after any role or leader change (so a
  new leader takes id 0 within one round trip of its election, not at the next period).
- Each NameServer gets one long-lived connection (a NameServer drops a broker whose connection closes).
  A lost connection triggers a registration at once, and while any NameServer fails the registrations
  repeat every `RETRY_S` (or the period, if shorter), so a restarted NameServer has this broker back within
  about a second; a NameServer that fails or recovers is one log line, not one per attempt.
- The topics registered are the store's at registration time; the data version's counter moves only when
  they change.
- `stop()` unregisters from every NameServer (best effort, short timeout) and closes the connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dledger.rocketmq.namesrv.bodies import encode_register_body
from dledger.rocketmq.namesrv.routes import MASTER_ID, TopicQueues
from dledger.rocketmq.remoting import (
    RemotingCommand,
    RemotingConnection,
    RemotingError,
    RequestCode,
    ResponseCode,
    connect,
)

__all__ = [
    "DEFAULT_CLUSTER",
    "GRPC_ENDPOINTS_NAMESPACE",
    "REGISTRAR_KEYS",
    "Registrar",
    "RegistrarConfig",
    "RegistrarConfigError",
    "broker_id_for",
]

log = logging.getLogger("dledger.registrar")

DEFAULT_CLUSTER = "DefaultCluster"
#: the NameServer KV namespace where a group's master publishes its RocketMQ 5 endpoints (key: broker name)
GRPC_ENDPOINTS_NAMESPACE = "DLEDGER_GRPC_ENDPOINTS"
DEFAULT_LISTEN_PORT = 10911
DEFAULT_PERIOD_MS = 30_000
#: seconds between registrations while a NameServer fails
RETRY_S = 1.0
REGISTRAR_KEYS = (
    "brokerClusterName",
    "brokerName",
    "namesrvAddr",
    "brokerIP1",
    "listenPort",
    "registerNameServerPeriod",
)


class RegistrarConfigError(ValueError):
    """A registrar key with a bad value."""


def broker_id_for(self_id: str, peer_ids: Iterable[str], leader_id: str | None) -> int:
    """This replica's broker id: 0 when it leads, else 1 + its position among the sorted node ids."""
    if leader_id == self_id:
        return MASTER_ID
    return 1 + sorted(peer_ids).index(self_id)


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    cluster: str
    broker_name: str
    namesrv_addrs: tuple[str, ...]
    broker_addr: str
    period_s: float = DEFAULT_PERIOD_MS / 1000

    @classmethod
    def from_properties(
        cls, props: Mapping[str, str], *, broker_name: str, default_host: str
    ) -> RegistrarConfig | None:
        """The registrar's settings, or None when `namesrvAddr` is not set (a broker without NameServers)."""
        raw = props.get("namesrvAddr", "").strip()
        if not raw:
            return None
        addrs = tuple(a.strip() for a in raw.split(";") if a.strip())
        for addr in addrs:
            host, sep, port = addr.rpartition(":")
            bad_host = not host or any(c in host for c in ", \t")
            if not sep or bad_host or not port.isdigit() or not 0 < int(port) < 65536:
                raise RegistrarConfigError(f"namesrvAddr: {addr!r} is not host:port (separate several with ';')")
        listen = props.get("listenPort", str(DEFAULT_LISTEN_PORT)).strip()
        if not listen.isdigit() or not 0 < int(listen) < 65536:
            raise RegistrarConfigError(f"listenPort: {listen!r} is not a port")
        period = props.get("registerNameServerPeriod", str(DEFAULT_PERIOD_MS)).strip()
        if not period.isdigit() or not 100 <= int(period) <= 3_600_000:
            raise RegistrarConfigError(f"registerNameServerPeriod: {period!r} is not in 100..3600000 ms")
        host = props.get("brokerIP1", "").strip() or default_host
        cluster = props.get("brokerClusterName", "").strip() or DEFAULT_CLUSTER
        return cls(cluster, broker_name, addrs, f"{host}:{int(listen)}", int(period) / 1000)


class Registrar:
    """Registers one replica with every NameServer: `start()`, `on_role_change(...)`, `stop()`."""

    def __init__(
        self,
        config: RegistrarConfig,
        *,
        self_id: str,
        peer_ids: Sequence[str],
        leader_id: Callable[[], str | None],
        topics: Callable[[], Iterable[TopicQueues]],
        master_kv: Mapping[tuple[str, str], str] | None = None,
        request_timeout: float = 3.0,
    ) -> None:
        """`master_kv`: (namespace, key) -> value put in every NameServer's KV config after each registration
        as master (what other brokers of the cluster read about this group)."""
        self.config = config
        self.self_id = self_id
        self.peer_ids = tuple(peer_ids)
        self.leader_id = leader_id
        self.topics = topics
        self.master_kv = dict(master_kv or {})
        self.request_timeout = request_timeout
        self.broker_id: int | None = None  # the id of the last registration sent
        self._conns: dict[str, RemotingConnection] = {}
        self._failing: set[str] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._version = (int(time.time() * 1000), 0)
        self._last_topics: tuple[TopicQueues, ...] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def on_role_change(self, role: str, term: int, leader_id: str | None) -> None:
        """The node's role callback: re-register at once."""
        self._kick.set()

    async def _loop(self) -> None:
        while True:
            self._kick.clear()
            await self.register_all()
            wait = min(self.config.period_s, RETRY_S) if self._failing else self.config.period_s
            try:
                await asyncio.wait_for(self._kick.wait(), wait)
            except TimeoutError:
                pass

    def _topics(self) -> tuple[TopicQueues, ...]:
        topics = tuple(sorted(self.topics(), key=lambda t: t.name))
        if topics != self._last_topics:
            self._last_topics = topics
            self._version = (self._version[0], self._version[1] + 1)
        return topics

    async def register_all(self) -> None:
        """One registration with every NameServer, concurrently."""
        broker_id = broker_id_for(self.self_id, self.peer_ids, self.leader_id())
        body = encode_register_body(self._topics(), self._version)
        fields = {
            "brokerName": self.config.broker_name,
            "brokerAddr": self.config.broker_addr,
            "clusterName": self.config.cluster,
            "haServerAddr": self.config.broker_addr,
            "brokerId": str(broker_id),
            "compressed": "false",
            "bodyCrc32": str(zlib.crc32(body) & 0x7FFFFFFF),
        }
        requests = [RemotingCommand.request(RequestCode.REGISTER_BROKER, fields, body)]
        if broker_id == MASTER_ID:
            requests += [
                RemotingCommand.request(RequestCode.PUT_KV_CONFIG, {"namespace": ns, "key": key, "value": value})
                for (ns, key), value in self.master_kv.items()
            ]
        await asyncio.gather(*(self._send(addr, requests) for addr in self.config.namesrv_addrs))
        self.broker_id = broker_id

    async def _send(self, addr: str, requests: Sequence[RemotingCommand]) -> None:
        try:
            conn = self._conns.get(addr)
            if conn is None or not conn.is_open:
                conn = self._conns[addr] = await connect(addr, timeout=self.request_timeout)
                conn.on_lost = self._lost
            for request in requests:
                response = await conn.request(request, self.request_timeout)
                if response.code != ResponseCode.SUCCESS:
                    raise RemotingError(f"answered code {response.code}: {response.remark}")
        except RemotingError as exc:
            if addr not in self._failing:
                self._failing.add(addr)
                log.warning("registrar: registering with name server %s failed: %s", addr, exc)
            stale = self._conns.pop(addr, None)
            if stale is not None:
                stale.close()
            return
        if addr in self._failing:
            self._failing.discard(addr)
            log.info("registrar: registered with name server %s again", addr)

    def _lost(self, conn: RemotingConnection) -> None:
        if self._task is not None and any(c is conn for c in self._conns.values()):
            self._kick.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.broker_id is not None:
            fields = {
                "brokerName": self.config.broker_name,
                "brokerAddr": self.config.broker_addr,
                "clusterName": self.config.cluster,
                "brokerId": str(self.broker_id),
            }
            request = RemotingCommand.request(RequestCode.UNREGISTER_BROKER, fields)
            conns = [c for c in self._conns.values() if c.is_open]
            await asyncio.gather(*(c.request(request, 1.0) for c in conns), return_exceptions=True)
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
