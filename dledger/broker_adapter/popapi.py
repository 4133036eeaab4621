"""The Pop consumption API of `MessageStore` (what a RocketMQ 5 ReceiveMessage / AckMessage /
ChangeInvisibleDuration handler calls). The state and its rules are in `pop.py`.

Invariants: receive, ack and change-invisible are replicated commands carrying the master's clock, so
redelivery, attempt counts and dead-lettering are decided identically on every replica; a receive that
finds nothing to deliver on the master's applied state is answered NO_NEW_MSG without writing to the log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dledger.broker_adapter import admin_read
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.admin_model import PERM_READ, StartFrom
from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.pop import Delivery, start_mark_key
from dledger.broker_adapter.results import (
    AckResult,
    AckStatus,
    PopResult,
    PopStatus,
    PutStatus,
    ReceivedMessage,
    StoredMessage,
    StoreError,
    check_name,
)
from dledger.broker_adapter.tables import CQ, U64, Inflight, qkey

if TYPE_CHECKING:
    from dledger.broker_adapter.apply import Applier
    from dledger.broker_adapter.options import StoreOptions
    from dledger.broker_adapter.reader import Reader
    from dledger.broker_adapter.tables import Tables

__all__ = ["MAX_INVISIBLE_MS", "PopMixin"]

MAX_INVISIBLE_MS = 1 << 40  # about 35 years: the leader refuses more (apply clamps the computed time anyway)


def _pop_status(exc: StoreError) -> PopStatus:
    if exc.status is PutStatus.NOT_LEADER:
        return PopStatus.NOT_LEADER
    if exc.status is PutStatus.MESSAGE_ILLEGAL:
        return PopStatus.ILLEGAL
    return PopStatus.SERVICE_NOT_AVAILABLE


def _ack_status(exc: StoreError) -> AckStatus:
    if exc.status is PutStatus.MESSAGE_ILLEGAL:
        return AckStatus.INVALID_HANDLE
    return AckStatus.NOT_LEADER if exc.status is PutStatus.NOT_LEADER else AckStatus.SERVICE_NOT_AVAILABLE


class PopMixin:
    options: StoreOptions
    tables: Tables
    applier: Applier

    if TYPE_CHECKING:

        async def _command(self, make: Callable[[int, int], c.Command]) -> Any: ...

        def _rd(self) -> Reader: ...

        def _check_master(self) -> None: ...

        def stamp_time(self) -> int: ...

    _pop_rr = 0

    async def pop_messages(
        self,
        group: str,
        topic: str,
        max_count: int = 32,
        invisible_ms: int = 30_000,
        queue_id: int = -1,
        max_attempts: int | None = None,
        from_end: bool = False,
    ) -> PopResult:
        """Receive up to `max_count` messages, invisible to the group for `invisible_ms` unless acknowledged.

        `queue_id = -1` takes from any queue (round robin). A message delivered `max_attempts` times
        (default `options.max_delivery_attempts`) and not acknowledged goes to `%DLQ%<group>`. A group new to
        the topic starts at offset 0, or with `from_end` after the messages stored before its first receive
        (the rules are in `pop.py`).
        """
        try:
            self._check_master()
            check_name("group", group)
            check_name("topic", topic)
            if max_count < 1 or not 0 <= invisible_ms <= MAX_INVISIBLE_MS:
                raise StoreError(
                    PutStatus.MESSAGE_ILLEGAL, f"max_count must be >= 1 and invisible_ms in 0..{MAX_INVISIBLE_MS}"
                )
            cfg = self._rd().topic(topic)
            if cfg is not None and not cfg.perm & PERM_READ:
                return PopResult(PopStatus.NO_PERMISSION, reason=f"topic {topic!r} is not readable")
            settings = admin_read.group_config(self.tables, group)
            if settings is not None:  # a configured group says where it starts (`pop.py`)
                from_end = settings.start == StartFrom.LAST
            unmarked = from_end and self._unmarked(group, topic)
            if cfg is None and not unmarked:
                return PopResult(PopStatus.TOPIC_NOT_FOUND, reason=f"topic {topic!r} does not exist")
            count = cfg.queue_count if cfg is not None else 1
            if cfg is not None and queue_id >= count:
                raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"queue {queue_id} does not exist")
            if settings is not None:
                fifo = settings.fifo
            else:
                fifo = cfg is not None and cfg.message_type in (MessageType.FIFO, MessageType.MIXED)
            if not unmarked and not self._may_deliver(group, topic, queue_id, count, fifo, from_end):
                return PopResult(PopStatus.NO_NEW_MSG)
            self._pop_rr += 1
            attempts = max_attempts or self.options.max_delivery_attempts
            start = self._pop_rr % count
            first = self._rd().first_index()
            out: list[Delivery] | None = await self._command(
                lambda n, now: c.PopReceive(
                    n, now, group, topic, queue_id, start, max_count, invisible_ms, attempts, first, from_end
                )
            )
        except StoreError as exc:
            return PopResult(_pop_status(exc), leader_address=exc.leader_address, reason=exc.reason)
        if out is None:
            return PopResult(PopStatus.TOPIC_NOT_FOUND)
        received = []
        for d in out:
            msg = await self._rd().body(d.index, d.pos, d.size)
            if msg is None:  # compacted meanwhile: the handle stays valid, the body is gone
                continue
            stored = StoredMessage(msg, d.topic, d.queue_id, d.queue_offset, d.index, d.store_ts)
            received.append(ReceivedMessage(stored, d.handle, d.attempt, d.invisible_until))
        return PopResult(PopStatus.FOUND if received else PopStatus.NO_NEW_MSG, received)

    def _unmarked(self, group: str, topic: str) -> bool:
        """Has the group neither a start mark nor a position on the topic (applied state)? Then a `from_end`
        receive is proposed even when it can deliver nothing: it records where the group starts."""
        db = self.tables.db
        base = qkey(group, topic)
        with self.tables.env.begin() as txn:
            if txn.get(start_mark_key(group, topic), db=db["popcur"]) is not None:
                return False
            for name in ("popcur", "offsets"):
                cursor = txn.cursor(db=db[name])
                if cursor.set_range(base) and cursor.key().startswith(base):
                    return False
        return True

    def _may_deliver(
        self, group: str, topic: str, queue_id: int, queue_count: int, fifo: bool = False, from_end: bool = False
    ) -> bool:
        """A cheap check on applied state: does any queue have new messages (on a FIFO topic: a next message
        whose message group is not blocked by one in flight) or expired in-flight ones? With `from_end`, a queue
        the group has no position on yet counts too (the receive gives it one)."""
        now = self.stamp_time()
        db = self.tables.db
        queues = [queue_id] if queue_id >= 0 else range(queue_count)
        with self.tables.env.begin() as txn:
            for queue in queues:
                qk = qkey(group, topic) + queue.to_bytes(4, "big")
                cur = txn.get(qk, db=db["popcur"]) or txn.get(qk, db=db["offsets"])
                if from_end and cur is None:
                    return True
                end = txn.get(topic.encode() + b"\0" + queue.to_bytes(4, "big"), db=db["cqmax"])
                head = U64.unpack(cur)[0] if cur else 0
                if (U64.unpack(end)[0] if end else 0) > head and not (
                    fifo and self._fifo_blocked(txn, qk, topic, queue, head, now)
                ):
                    return True
                cursor = txn.cursor(db=db["popexp"])
                found = cursor.set_range(qk) and cursor.key().startswith(qk)
                if found and U64.unpack_from(cursor.key(), len(qk))[0] <= now:
                    return True
        return False

    def _fifo_blocked(self, txn: Any, qk: bytes, topic: str, queue: int, head: int, now: int) -> bool:
        """Is the queue's next new message (at `head`) held back by an in-flight, still invisible message of its
        message group? (Then a receive could deliver nothing new from this queue: see `pop.py`.)"""
        db = self.tables.db
        raw = txn.get(topic.encode() + b"\0" + queue.to_bytes(4, "big") + U64.pack(head), db=db["cq"])
        if raw is None:
            return False
        group_hash = CQ.unpack(raw)[4]
        if not group_hash:  # no message group: never held back
            return False
        cursor = txn.cursor(db=db["inflight"])
        if cursor.set_range(qk):
            for key, value in cursor:
                if not key.startswith(qk) or len(key) != len(qk) + 8:
                    break
                rec = Inflight.unpack(value)
                if rec.group_hash == group_hash and rec.until > now:
                    return True
        return False

    async def ack_message(self, group: str, receipt_handle: str) -> AckResult:
        return (await self.ack_messages(group, [receipt_handle]))[0]

    async def ack_messages(self, group: str, receipt_handles: Sequence[str]) -> list[AckResult]:
        """Acknowledge popped messages (one log entry); a stale or unknown handle gets INVALID_HANDLE."""
        handles = tuple(receipt_handles)
        try:
            check_name("group", group)
            oks: list[bool] = await self._command(lambda n, now: c.Ack(n, now, group, handles))
        except StoreError as exc:
            return [AckResult(_ack_status(exc), leader_address=exc.leader_address, reason=exc.reason)] * len(handles)
        return [
            AckResult(AckStatus.OK if ok else AckStatus.INVALID_HANDLE, h) for ok, h in zip(oks, handles, strict=True)
        ]

    async def change_invisible_duration(self, group: str, receipt_handle: str, invisible_ms: int) -> AckResult:
        """Make an in-flight message invisible for `invisible_ms` from now; returns its new receipt handle."""
        try:
            check_name("group", group)
            if invisible_ms > MAX_INVISIBLE_MS:
                raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"invisible_ms is over {MAX_INVISIBLE_MS}")
            out: tuple[str, int] | None = await self._command(
                lambda n, now: c.ChangeInvisible(n, now, group, receipt_handle, max(invisible_ms, 0))
            )
        except StoreError as exc:
            return AckResult(_ack_status(exc), leader_address=exc.leader_address, reason=exc.reason)
        if out is None:
            return AckResult(AckStatus.INVALID_HANDLE, receipt_handle)
        return AckResult(AckStatus.OK, out[0], out[1])
