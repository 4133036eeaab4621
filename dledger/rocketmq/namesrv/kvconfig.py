"""The NameServer's KV config (RocketMQ's `KVConfigManager`): namespace -> key -> value, in memory only.

RocketMQ's NameServer keeps these in a file; dledger's NameServer keeps no disk state, so a restart forgets
them (brokers' registrations come back by themselves; KV entries must be put again).
"""

from __future__ import annotations

__all__ = ["NAMESPACE_ORDER_TOPIC_CONFIG", "KVConfig"]

#: RocketMQ's NamesrvUtil.NAMESPACE_ORDER_TOPIC_CONFIG: a topic's order config ("brokerName:queues;...")
NAMESPACE_ORDER_TOPIC_CONFIG = "ORDER_TOPIC_CONFIG"


class KVConfig:
    def __init__(self) -> None:
        self._tables: dict[str, dict[str, str]] = {}

    def put(self, namespace: str, key: str, value: str) -> None:
        self._tables.setdefault(namespace, {})[key] = value

    def get(self, namespace: str, key: str) -> str | None:
        return self._tables.get(namespace, {}).get(key)

    def delete(self, namespace: str, key: str) -> None:
        table = self._tables.get(namespace)
        if table is not None:
            table.pop(key, None)
            if not table:
                del self._tables[namespace]

    def namespace(self, namespace: str) -> dict[str, str] | None:
        table = self._tables.get(namespace)
        return dict(table) if table else None
