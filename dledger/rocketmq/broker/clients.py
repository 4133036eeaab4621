"""The broker's view of its remoting clients: heartbeats, consumer groups and their subscriptions, and the
queue locks of orderly consumers (RocketMQ's ConsumerManager, ProducerManager and RebalanceLockManager).

Volatile, per replica, as in RocketMQ: a client that moves to a new master heartbeats it within its
heartbeat period (30 s). A client is dropped when its connection closes or after `expire_s` without a
heartbeat (RocketMQ's channel expiry, 120 s); a consumer group's membership change is reported by
`heartbeat` / `unregister` / `prune` (the caller then notifies the group's consumers).

Invariants: `consumer_ids(group)` lists live clients only, sorted; a queue lock is held by at most one
client of a group and lapses `lock_ttl_s` after its last renewal (RocketMQ's lockMaxLiveTime, 60 s).
Heartbeat bodies are untrusted: malformed parts are skipped, never raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientRegistry", "ConsumerClient", "Subscription", "parse_subscription"]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic subscription from a heartbeat (`SubscriptionData`)."""

    topic: str
    expression: str = "*"
    expression_type: str = "TAG"
    tags: frozenset[str] = frozenset()
    version: int = 0


@dataclass(slots=True)
class ConsumerClient:
    client_id: str
    conn: Any
    group: str
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    message_model: str = "CLUSTERING"
    consume_type: str = "CONSUME_PASSIVELY"
    consume_from_where: str = ""
    seen: float = 0.0
    language: int = 0  # the client's LanguageCode and version, from its heartbeat request
    version: int = 0


def _text(value: Any, limit: int = 255) -> str:
    return value[:limit] if isinstance(value, str) else ""


# the C++ client sends these enums as their numbers, the Java client by name
_MODELS = {0: "BROADCASTING", 1: "CLUSTERING"}
_CONSUME_TYPES = {0: "CONSUME_ACTIVELY", 1: "CONSUME_PASSIVELY"}


def _enum(value: Any, names: dict[int, str], default: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, default)
    return _text(value) or default


def parse_subscription(raw: Any) -> Subscription | None:
    if not isinstance(raw, dict) or not _text(raw.get("topic")):
        return None
    tags = raw.get("tagsSet")
    version = raw.get("subVersion")
    return Subscription(
        topic=_text(raw["topic"]),
        expression=_text(raw.get("subString"), 4096) or "*",
        expression_type=_text(raw.get("expressionType")) or "TAG",
        tags=frozenset(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else frozenset(),
        version=version if isinstance(version, int) else 0,
    )


class ClientRegistry:
    def __init__(
        self, *, expire_s: float = 120.0, lock_ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.expire_s = expire_s
        self.lock_ttl_s = lock_ttl_s
        self.clock = clock
        self.consumers: dict[str, dict[str, ConsumerClient]] = {}  # group -> client id -> client
        self.producers: dict[str, dict[str, tuple[Any, float]]] = {}  # group -> client id -> (conn, seen)
        self._locks: dict[tuple[str, str, str, int], tuple[str, float]] = {}  # (group, topic, broker, q)

    # ---- heartbeats ----
    def heartbeat(self, conn: Any, data: Any) -> tuple[list[str], list[ConsumerClient]]:
        """Record a `HeartbeatData` body (parsed JSON); returns (consumer groups whose membership changed,
        the consumers it described)."""
        if not isinstance(data, dict):
            return [], []
        client_id = _text(data.get("clientID"))
        if not client_id:
            return [], []
        now = self.clock()
        changed: list[str] = []
        seen: list[ConsumerClient] = []
        for item in data.get("producerDataSet") or []:
            group = _text(item.get("groupName")) if isinstance(item, dict) else ""
            if group:
                self.producers.setdefault(group, {})[client_id] = (conn, now)
        for item in data.get("consumerDataSet") or []:
            if not isinstance(item, dict) or not _text(item.get("groupName")):
                continue
            group = _text(item["groupName"])
            subs = [s for s in map(parse_subscription, item.get("subscriptionDataSet") or []) if s is not None]
            members = self.consumers.setdefault(group, {})
            old = members.get(client_id)
            client = ConsumerClient(
                client_id, conn, group, {s.topic: s for s in subs},
                _enum(item.get("messageModel"), _MODELS, "CLUSTERING"),
                _enum(item.get("consumeType"), _CONSUME_TYPES, "CONSUME_PASSIVELY"),
                str(item.get("consumeFromWhere", "")), now,
            )  # fmt: skip
            members[client_id] = client
            if old is None or old.conn is not conn or old.subscriptions != client.subscriptions:
                changed.append(group)
            seen.append(client)
        return changed, seen

    def unregister(self, client_id: str, producer_group: str = "", consumer_group: str = "") -> list[str]:
        """Forget a client (in one group, or in all when the group is empty); the consumer groups it left."""
        for group, members in self.producers.items():
            if not producer_group or group == producer_group:
                members.pop(client_id, None)
        left = []
        for group, consumers in self.consumers.items():
            if (not consumer_group or group == consumer_group) and consumers.pop(client_id, None) is not None:
                left.append(group)
        return left

    def prune(self) -> list[str]:
        """Drop clients whose connection closed or whose heartbeats stopped; the consumer groups that changed."""
        limit = self.clock() - self.expire_s
        changed = []
        for group, members in self.consumers.items():
            dead = [cid for cid, c in members.items() if c.seen < limit or not _open(c.conn)]
            for cid in dead:
                del members[cid]
            if dead:
                changed.append(group)
        for producers in self.producers.values():
            for cid in [cid for cid, (conn, seen) in producers.items() if seen < limit or not _open(conn)]:
                del producers[cid]
        return changed

    # ---- queries ----
    def consumer_ids(self, group: str) -> list[str]:
        return sorted(self.consumers.get(group, {}))

    def group_members(self, group: str) -> list[ConsumerClient]:
        return [self.consumers[group][cid] for cid in self.consumer_ids(group)]

    def subscription(self, group: str, topic: str) -> Subscription | None:
        for client in self.consumers.get(group, {}).values():
            sub = client.subscriptions.get(topic)
            if sub is not None:
                return sub
        return None

    def groups(self) -> list[str]:
        return sorted(g for g, members in self.consumers.items() if members)

    # ---- orderly consumption locks ----
    def lock(self, group: str, client_id: str, queues: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        """Lock (or renew) each (topic, broker name, queue id) for the client; the ones it now holds."""
        now = self.clock()
        held = []
        for topic, broker, queue in queues:
            key = (group, topic, broker, queue)
            owner = self._locks.get(key)
            if owner is None or owner[0] == client_id or owner[1] <= now:
                self._locks[key] = (client_id, now + self.lock_ttl_s)
                held.append((topic, broker, queue))
        return held

    def unlock(self, group: str, client_id: str, queues: Iterable[tuple[str, str, int]]) -> None:
        for topic, broker, queue in queues:
            key = (group, topic, broker, queue)
            owner = self._locks.get(key)
            if owner is not None and owner[0] == client_id:
                del self._locks[key]


def _open(conn: Any) -> bool:
    return bool(getattr(conn, "is_open", True))
