"""The broker replica's NameServer registration: `Registrar` wired to this replica's node and store.

The topics registered are the store's (each with its queue count for reading and writing, read-write
permission, FIFO topics as ordered), plus RocketMQ's auto-create template topic TBW102 when
`autoCreateTopicEnable` is on (clients look it up to send to a topic that does not exist yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.options import StoreOptions
from dledger.broker_adapter.store import MessageStore
from dledger.node.config import ConfigError, NodeConfig, parse_address
from dledger.node.server import DLedgerServer
from dledger.rocketmq.namesrv.routes import TopicQueues
from dledger.rocketmq.registrar import (
    GRPC_ENDPOINTS_NAMESPACE,
    REGISTRAR_KEYS,
    Registrar,
    RegistrarConfig,
    RegistrarConfigError,
)

__all__ = ["AUTO_CREATE_TOPIC", "REGISTRAR_KEYS", "broker_registrar"]

#: RocketMQ's TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC, with PERM_INHERIT | PERM_READ | PERM_WRITE
AUTO_CREATE_TOPIC = "TBW102"
_PERM_INHERIT_READ_WRITE = 7


def broker_registrar(
    props: Mapping[str, str],
    node: NodeConfig,
    broker_name: str,
    server: DLedgerServer,
    store: MessageStore,
    options: StoreOptions,
    grpc_endpoints: Sequence[str] = (),
) -> Registrar | None:
    """The replica's registrar (its role callback attached), or None without `namesrvAddr`; ConfigError.
    `grpc_endpoints`: the group's RocketMQ 5 endpoints, published for the cluster's other groups."""
    host, _ = parse_address(node.peers[node.self_id])
    try:
        config = RegistrarConfig.from_properties(props, broker_name=broker_name, default_host=host)
    except RegistrarConfigError as exc:
        raise ConfigError(str(exc)) from None
    if config is None:
        return None

    def topics() -> list[TopicQueues]:
        listed = [
            TopicQueues(t.name, t.queue_count, t.queue_count, order=t.message_type == MessageType.FIFO)
            for t in store.topics()
        ]
        if options.auto_create_topic:
            n = options.default_queue_count
            listed.append(TopicQueues(AUTO_CREATE_TOPIC, n, n, perm=_PERM_INHERIT_READ_WRITE))
        return listed

    registrar = Registrar(
        config,
        self_id=node.self_id,
        peer_ids=list(node.peers),
        leader_id=lambda: server.leader_id,
        topics=topics,
        master_kv={(GRPC_ENDPOINTS_NAMESPACE, broker_name): ";".join(grpc_endpoints)} if grpc_endpoints else None,
    )
    server.on_role_change(registrar.on_role_change)
    return registrar
