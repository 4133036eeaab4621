"""Reads of the admin state on any replica: consumer groups, consumer progress, per-group counters.

Each function is one LMDB read transaction over applied state (never beyond the commit index). Consumer
progress per queue: the broker offset (the queue's next offset), the consumer offset (the group's next
never-delivered offset, else its committed offset; -1 when the group has no position on the queue), the lag
(broker offset minus consumer offset, 0 without a position), the messages in flight (delivered, not yet
acknowledged) and the last consume time (the store time of the message just before the consumer offset, 0 if
none). Lag counts what the group has not received yet; in-flight messages are listed apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dledger.broker_adapter.admin_model import GroupConfig, GroupStats
from dledger.broker_adapter.tables import CQ, U64, Tables, qkey

__all__ = [
    "QueueProgress", "all_stats", "group_config", "group_configs", "group_topics", "messages_in", "progress",
    "topic_groups",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class QueueProgress:
    group: str
    topic: str
    queue_id: int
    broker_offset: int
    consumer_offset: int
    lag: int
    inflight: int
    last_consume_ms: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_config(tables: Tables, name: str) -> GroupConfig | None:
    with tables.env.begin() as txn:
        raw = txn.get(name.encode(), db=tables.db["groups"])
    return GroupConfig.unpack(name, raw) if raw is not None else None


def group_configs(tables: Tables) -> list[GroupConfig]:
    with tables.env.begin() as txn:
        return [
            GroupConfig.unpack(bytes(k).decode(), bytes(v)) for k, v in txn.cursor(db=tables.db["groups"]).iternext()
        ]


def group_topics(tables: Tables, group: str) -> list[str]:
    """The topics the group has a position, a commit or counters on, sorted."""
    prefix = qkey(group)
    found: set[str] = set()
    with tables.env.begin() as txn:
        for table in ("popcur", "offsets", "gstats"):
            cursor = txn.cursor(db=tables.db[table])
            if not cursor.set_range(prefix):
                continue
            for key in cursor.iternext(values=False):
                if not bytes(key).startswith(prefix):
                    break
                found.add(bytes(key)[len(prefix) :].split(b"\0", 1)[0].decode())
    return sorted(found)


def topic_groups(tables: Tables, topic: str) -> list[str]:
    """The groups that have a position, a commit or counters on `topic`, sorted (a scan: for admin reads)."""
    name = topic.encode()
    found: set[str] = set()
    with tables.env.begin() as txn:
        for table in ("popcur", "offsets", "gstats"):
            for key in txn.cursor(db=tables.db[table]).iternext(values=False):
                parts = bytes(key).split(b"\0", 2)
                if len(parts) >= 2 and parts[1] == name:  # gstats keys end without a NUL
                    found.add(parts[0].decode())
    return sorted(found)


def progress(tables: Tables, group: str, topic: str) -> list[QueueProgress]:
    """One row per queue of `topic` (none if the topic does not exist)."""
    db = tables.db
    rows = []
    with tables.env.begin() as txn:
        raw = txn.get(topic.encode(), db=db["topics"])
        if raw is None:
            return []
        count = int.from_bytes(raw[:4], "big")
        for queue in range(count):
            cqk = topic.encode() + b"\0" + queue.to_bytes(4, "big")
            end = txn.get(cqk, db=db["cqmax"])
            broker = U64.unpack(end)[0] if end else 0
            gk = qkey(group, topic) + queue.to_bytes(4, "big")
            cur = txn.get(gk, db=db["popcur"]) or txn.get(gk, db=db["offsets"])
            consumer = U64.unpack(cur)[0] if cur else -1
            last = 0
            if consumer > 0:
                rec = txn.get(cqk + U64.pack(consumer - 1), db=db["cq"])
                last = CQ.unpack(rec)[5] if rec is not None else 0
            inflight = 0
            cursor = txn.cursor(db=db["inflight"])
            if cursor.set_range(gk):
                for key in cursor.iternext(values=False):
                    if not bytes(key).startswith(gk) or len(key) != len(gk) + 8:
                        break
                    inflight += 1
            lag = max(broker - consumer, 0) if consumer >= 0 else 0
            rows.append(QueueProgress(group, topic, queue, broker, consumer, lag, inflight, last))
    return rows


def all_stats(tables: Tables) -> dict[tuple[str, str], GroupStats]:
    """Counters by (group, topic)."""
    out = {}
    with tables.env.begin() as txn:
        for key, raw in txn.cursor(db=tables.db["gstats"]).iternext():
            parts = bytes(key).split(b"\0")
            if len(parts) >= 2:
                out[parts[0].decode(), parts[1].decode()] = GroupStats.unpack(bytes(raw))
    return out


def messages_in(tables: Tables) -> dict[str, int]:
    """Messages ever enqueued per topic (the sum of its queues' next offsets)."""
    out: dict[str, int] = {}
    with tables.env.begin() as txn:
        for key, raw in txn.cursor(db=tables.db["cqmax"]).iternext():
            topic = bytes(key).split(b"\0", 1)[0].decode()
            out[topic] = out.get(topic, 0) + U64.unpack(raw)[0]
    return out
