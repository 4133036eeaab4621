"""The admin API of `MessageStore`: topics, consumer groups, consumer progress, recall of delayed messages.

Writes are replicated commands proposed on the master (`commands.UpdateTopic`, ...; applied in `admin_apply.py`),
so every replica holds the same settings and a new master keeps them; reads are answered by any replica from
its applied state (`admin_read.py`). Every refusal is a `StoreError` whose reason is one line.

Invariants: the leader refuses what apply would skip (bad names, counts, types, permissions, group settings),
so an accepted request is never silently ignored; a topic's queue count never shrinks, and a FIFO topic's never
grows (message groups map to queues by hash: growth would break their order); a topic or group is created
only when it does not exist, and changed only when it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dledger.broker_adapter import admin_read
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.admin_model import PERM_READ, PERM_WRITE, GroupConfig, GroupStats, parse_recall_handle
from dledger.broker_adapter.admin_read import QueueProgress
from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.results import PutStatus, StoreError, TopicConfig, check_name

if TYPE_CHECKING:
    from dledger.broker_adapter.reader import Reader
    from dledger.broker_adapter.tables import Tables

__all__ = ["AdminMixin"]


def _illegal(why: str) -> StoreError:
    return StoreError(PutStatus.MESSAGE_ILLEGAL, why)


class AdminMixin:
    tables: Tables

    if TYPE_CHECKING:

        async def _command(self, make: Callable[[int, int], c.Command]) -> Any: ...

        def _rd(self) -> Reader: ...

        def topic(self, name: str) -> TopicConfig | None: ...

    # ---- topics ----
    async def put_topic(
        self,
        topic: str,
        *,
        create: bool,
        queue_count: int | None = None,
        message_type: MessageType | None = None,
        perm: int | None = None,
    ) -> TopicConfig:
        """Create a topic (`create`: it must not exist; defaults 8 queues, NORMAL, read and write) or change one
        (it must exist; what is not given stays)."""
        check_name("topic", topic)
        current = self.topic(topic)
        if create and current is not None:
            raise _illegal(f"topic {topic!r} exists (update it instead)")
        if not create and current is None:
            raise StoreError(PutStatus.TOPIC_NOT_FOUND, f"topic {topic!r} does not exist")
        count = queue_count if queue_count is not None else (current.queue_count if current else 8)
        kind = message_type if message_type is not None else (current.message_type if current else MessageType.NORMAL)
        bits = perm if perm is not None else (current.perm if current else PERM_READ | PERM_WRITE)
        if not 1 <= count <= 1024:
            raise _illegal(f"queue count {count} is not in 1..1024")
        if current is not None and count < current.queue_count:
            raise _illegal(f"topic {topic!r} has {current.queue_count} queues; a queue count never shrinks")
        fifo = kind == MessageType.FIFO or (current is not None and current.message_type == MessageType.FIFO)
        if current is not None and fifo and count != current.queue_count:
            raise _illegal(f"FIFO topic {topic!r} keeps its {current.queue_count} queues (message group order)")
        if bits not in (0, PERM_READ, PERM_WRITE, PERM_READ | PERM_WRITE):
            raise _illegal(f"permission {bits} is not a combination of read (4) and write (2)")
        cfg = await self._command(lambda n, now: c.UpdateTopic(n, now, topic, count, int(kind), bits))
        if not isinstance(cfg, TopicConfig):
            raise _illegal(f"topic {topic!r} was not changed")
        return cfg

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic, its consume queues and every group's position on it (see `admin_apply.py`)."""
        check_name("topic", topic)
        if self.topic(topic) is None:
            raise StoreError(PutStatus.TOPIC_NOT_FOUND, f"topic {topic!r} does not exist")
        if not await self._command(lambda n, now: c.DeleteTopic(n, now, topic)):
            raise StoreError(PutStatus.TOPIC_NOT_FOUND, f"topic {topic!r} does not exist")

    # ---- consumer groups ----
    def group_config(self, group: str) -> GroupConfig | None:
        return admin_read.group_config(self.tables, group)

    def group_configs(self) -> list[GroupConfig]:
        return admin_read.group_configs(self.tables)

    async def put_group(self, cfg: GroupConfig, *, create: bool) -> GroupConfig:
        """Create a group's settings (`create`: it must have none) or replace them (it must have some)."""
        check_name("group", cfg.name)
        why = cfg.check()
        if why is not None:
            raise _illegal(why)
        exists = self.group_config(cfg.name) is not None
        if create and exists:
            raise _illegal(f"group {cfg.name!r} exists (update it instead)")
        if not create and not exists:
            raise StoreError(PutStatus.NOT_FOUND, f"group {cfg.name!r} does not exist")
        out = await self._command(
            lambda n, now: c.UpdateGroup(
                n, now, cfg.name, cfg.max_attempts, cfg.backoff_initial_ms, cfg.backoff_max_ms,
                cfg.backoff_multiplier_milli, cfg.fifo, int(cfg.start), cfg.start_ms,
            )
        )  # fmt: skip
        if not isinstance(out, GroupConfig):
            raise _illegal(f"group {cfg.name!r} was not changed")
        return out

    async def delete_group(self, group: str) -> None:
        """Delete a group's settings, its positions, in-flight messages and counters."""
        check_name("group", group)
        if not await self._command(lambda n, now: c.DeleteGroup(n, now, group)):
            raise StoreError(PutStatus.NOT_FOUND, f"group {group!r} does not exist")

    def progress(self, group: str, topic: str | None = None) -> list[QueueProgress]:
        """Per queue of `topic` (every topic the group consumed when None): offsets, lag, in flight, last time."""
        check_name("group", group)
        topics = [topic] if topic is not None else admin_read.group_topics(self.tables, group)
        return [row for name in topics for row in admin_read.progress(self.tables, group, name)]

    def topic_groups(self, topic: str) -> list[str]:
        """The groups that have a position, a commit or counters on `topic`, sorted."""
        return admin_read.topic_groups(self.tables, topic)

    def group_stats(self) -> dict[tuple[str, str], GroupStats]:
        """Replicated counters by (group, topic): deliveries, redeliveries, acknowledgements, dead letters."""
        return admin_read.all_stats(self.tables)

    # ---- recall ----
    async def recall(self, topic: str, handle: str) -> str:
        """Withdraw a delayed message still waiting; returns its message id. A handle that is not ours, of
        another topic, or of a message delivered or recalled already is refused (`StoreError`)."""
        parsed = parse_recall_handle(handle)
        if parsed is None:
            raise _illegal("the recall handle is malformed")
        handle_topic, msg_id, delivery = parsed
        if handle_topic != topic:
            raise _illegal(f"the recall handle is of topic {handle_topic!r}, not {topic!r}")
        if not await self._command(lambda n, now: c.Recall(n, now, topic, msg_id, delivery)):
            raise StoreError(PutStatus.NOT_FOUND, f"message {msg_id} is not waiting (delivered or recalled)")
        return msg_id
