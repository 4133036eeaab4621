"""Applying the admin commands (topics, consumer groups, recall) and the per-group counters, deterministically.

Called by the applier inside its write transaction; the same rules hold as in `apply.py`: nothing here reads a
clock or local configuration, and a command whose values are out of range changes nothing (its outcome is None
or False, on every replica alike).

- UPDATE_TOPIC creates a topic or changes it: the queue count never shrinks, the message type and permission
  are replaced. DELETE_TOPIC removes the topic's settings, its consume queues and every group's position,
  in-flight messages and counters on it, in one transaction (its cost grows with the topic's queue records);
  the message bodies stay in the log until retention, and a delayed or prepared message of the topic that is
  released later is dropped (`topic_exists`).
- UPDATE_GROUP replaces a group's settings (`admin_model.GroupConfig`); DELETE_GROUP removes them with the
  group's positions, in-flight messages and counters.
- RECALL removes a delayed message that is still waiting (its timer row, its pin and its id row): it is never
  delivered. A message already delivered, recalled before or unknown is not found (False).
"""

from __future__ import annotations

from typing import Any, Protocol

from dledger.broker_adapter import commands as c
from dledger.broker_adapter.admin_model import GroupConfig, GroupStats, StartFrom
from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.results import TopicConfig
from dledger.broker_adapter.tables import (
    LOC,
    MAX_GROUP_BYTES,
    MAX_ID_BYTES,
    MAX_TOPIC_BYTES,
    PIN_INFLIGHT,
    PIN_TIMER,
    U64,
    Inflight,
    pin_key,
    qkey,
    valid_name,
)

__all__ = [
    "AdminContext",
    "TablesContext",
    "bump_stats",
    "delete_group",
    "delete_topic",
    "group_config",
    "recall",
    "topic_exists",
    "update_group",
    "update_topic",
]


class TablesContext(Protocol):
    """The applier's database handles (what the group settings and counters need)."""

    db: dict[str, Any]


class AdminContext(TablesContext, Protocol):
    """What the admin commands use of the store's applier (`dledger.broker_adapter.apply.Applier`): its tables,
    its topic cache and reads, and the cache of consume queue ends."""

    topics: dict[str, TopicConfig | None]

    def topic(self, txn: Any, name: str) -> TopicConfig | None: ...

    def forget_queues(self, prefix: bytes) -> None: ...


def group_config(a: TablesContext, txn: Any, group: str) -> GroupConfig | None:
    """The group's settings, or None when the group was never configured (the broker's defaults apply)."""
    if not valid_name(group, MAX_GROUP_BYTES):
        return None
    raw = txn.get(group.encode(), db=a.db["groups"])
    return GroupConfig.unpack(group, raw) if raw is not None else None


def bump_stats(a: TablesContext, txn: Any, group: str, topic: str, **deltas: int) -> None:
    key = qkey(group, topic)
    old = GroupStats.unpack(txn.get(key, db=a.db["gstats"]))
    txn.put(key, old.plus(**deltas).pack(), db=a.db["gstats"])


def update_topic(a: AdminContext, txn: Any, cmd: c.UpdateTopic) -> TopicConfig | None:
    if cmd.message_type not in MessageType._value2member_map_ or not 0 <= cmd.perm <= 7:
        return None
    if not 1 <= cmd.queue_count <= 1024 or not valid_name(cmd.topic, MAX_TOPIC_BYTES):
        return None
    current = a.topic(txn, cmd.topic)
    count = max(cmd.queue_count, current.queue_count if current is not None else 0)
    kind = MessageType(cmd.message_type)
    txn.put(cmd.topic.encode(), count.to_bytes(4, "big") + kind.to_bytes(4, "big"), db=a.db["topics"])
    if cmd.perm == 6:
        txn.delete(cmd.topic.encode(), db=a.db["topicattr"])
    else:
        txn.put(cmd.topic.encode(), bytes([cmd.perm]), db=a.db["topicattr"])
    a.topics.pop(cmd.topic, None)
    return TopicConfig(cmd.topic, count, kind, cmd.perm)


def topic_exists(a: AdminContext, txn: Any, topic: str) -> bool:
    return a.topic(txn, topic) is not None


def _delete_prefix(txn: Any, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Delete every row whose key starts with `prefix`; returns them."""
    cursor = txn.cursor(db=db)
    gone: list[tuple[bytes, bytes]] = []
    if cursor.set_range(prefix):
        while cursor.key().startswith(prefix):
            gone.append((bytes(cursor.key()), bytes(cursor.value())))
            if not cursor.delete():
                break
    return gone


def _drop_inflight_rows(a: AdminContext, txn: Any, rows: list[tuple[bytes, bytes]]) -> None:
    """The `popexp` and `pins` rows of deleted `inflight` rows (key: group NUL topic NUL u32 queue u64 offset)."""
    for key, raw in rows:
        rec = Inflight.unpack(raw)
        qk, offset = key[:-8], key[-8:]
        txn.delete(qk + U64.pack(rec.until) + offset, db=a.db["popexp"])
        txn.delete(pin_key(rec.index, PIN_INFLIGHT, key), db=a.db["pins"])


def _group_topic_keys(txn: Any, db: Any, topic: bytes) -> list[bytes]:
    """Keys `group NUL topic NUL ...` of any group for `topic`."""
    out = []
    for key in txn.cursor(db=db).iternext(values=False):
        parts = bytes(key).split(b"\0", 2)
        if len(parts) >= 2 and parts[1] == topic:
            out.append(bytes(key))
    return out


def delete_topic(a: AdminContext, txn: Any, cmd: c.DeleteTopic) -> bool:
    if not valid_name(cmd.topic, MAX_TOPIC_BYTES) or a.topic(txn, cmd.topic) is None:
        return False
    name = cmd.topic.encode()
    txn.delete(name, db=a.db["topics"])
    txn.delete(name, db=a.db["topicattr"])
    a.topics.pop(cmd.topic, None)
    _delete_prefix(txn, a.db["cq"], name + b"\0")
    _delete_prefix(txn, a.db["cqmax"], name + b"\0")
    a.forget_queues(name + b"\0")
    for table in ("offsets", "popcur", "gstats"):
        for key in _group_topic_keys(txn, a.db[table], name):
            txn.delete(key, db=a.db[table])
    rows = []
    for key in _group_topic_keys(txn, a.db["inflight"], name):
        rows.append((key, bytes(txn.get(key, db=a.db["inflight"]))))
        txn.delete(key, db=a.db["inflight"])
    _drop_inflight_rows(a, txn, rows)
    return True


def update_group(a: AdminContext, txn: Any, cmd: c.UpdateGroup) -> GroupConfig | None:
    if not valid_name(cmd.group, MAX_GROUP_BYTES) or cmd.start not in StartFrom._value2member_map_:
        return None
    cfg = GroupConfig(
        cmd.group,
        cmd.max_attempts,
        cmd.backoff_initial_ms,
        cmd.backoff_max_ms,
        cmd.backoff_multiplier_milli,
        cmd.fifo,
        StartFrom(cmd.start),
        cmd.start_ms,
    )
    if cfg.check() is not None:
        return None
    txn.put(cmd.group.encode(), cfg.pack(), db=a.db["groups"])
    return cfg


def delete_group(a: AdminContext, txn: Any, cmd: c.DeleteGroup) -> bool:
    if not valid_name(cmd.group, MAX_GROUP_BYTES):
        return False
    found = bool(txn.delete(cmd.group.encode(), db=a.db["groups"]))
    prefix = qkey(cmd.group)
    for table in ("offsets", "popcur", "gstats"):
        found = bool(_delete_prefix(txn, a.db[table], prefix)) or found
    rows = _delete_prefix(txn, a.db["inflight"], prefix)
    _drop_inflight_rows(a, txn, rows)
    return found or bool(rows)


def recall(a: AdminContext, txn: Any, cmd: c.Recall) -> bool:
    msg_id = cmd.msg_id.encode()
    if not 0 < len(msg_id) <= MAX_ID_BYTES:
        return False
    raw = txn.get(msg_id, db=a.db["ids"])
    if raw is None:
        return False
    index, pos, _, _, offset, _ = LOC.unpack(raw)
    if offset != -1:
        return False  # delivered (enqueued) already
    timer_key = U64.pack(cmd.delivery_ms) + U64.pack(index) + pos.to_bytes(4, "big")
    pending = txn.get(timer_key, db=a.db["timers"])
    if pending is None or not bytes(pending).endswith(qkey(cmd.topic) + msg_id):
        return False
    txn.delete(timer_key, db=a.db["timers"])
    txn.delete(pin_key(index, PIN_TIMER, pos.to_bytes(4, "big")), db=a.db["pins"])
    txn.delete(msg_id, db=a.db["ids"])
    return True
