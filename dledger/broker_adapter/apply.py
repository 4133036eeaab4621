"""The applier: turns committed command entries into LMDB state, deterministically.

Rules (every replica must derive identical tables from the same log):
- nothing here reads a clock, randomness or local configuration: time is `log_time`, the running maximum
  of the `now` stamped into commands by the leader (so it never goes backwards, even across leaders), moved
  at most `MAX_TIME_STEP` per command and kept below `MAX_TIME` (a wrong stamp cannot hold time hostage);
- one LMDB write transaction per applied batch (the entries the node applies in one go: the transaction is
  committed by a `call_soon` callback, before any other task runs), which also stores `meta[applied]`;
  outcomes reach waiters only after that commit; a full LMDB map is doubled and the open batch applied again
  (same entries, same committed state: same result);
- malformed input is decided from the entry's bytes: a truncated or undecodable command, names or ids that
  cannot be LMDB keys (empty, NUL, too long: see `tables.MAX_*`), numbers out of range change nothing but
  `applied` (a PUT message with a bad id or queue is rejected alone); as a safety net, a command that raises
  anything but a storage error is skipped whole (the batch is applied again without it: no partial effect),
  identically on every replica, and logged;
- a storage error (`lmdb.Error` other than a key / value size error) or a failed commit aborts the
  transaction, drops the caches and propagates (the node fences; after a failed commit `failed` is set and
  every later `apply` raises), so LMDB always holds exactly the effect of entries `1..applied`;
- no-op, config and foreign (non-adapter) entries change nothing at all and open no transaction;
- queue offsets are assigned here, in log order: `cqmax[topic, queue]` is the next offset;
- delayed messages wait in `timers` and are enqueued (given their offset) by the first entry whose
  `log_time` reaches their delivery time; prepared transactional messages wait in `half` until an
  END_TRANSACTION commits (enqueue) or rolls back (drop) them.
Outcomes for the proposing process are handed over by `nonce` in `outcomes` (only for wanted nonces).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb

from dledger.broker_adapter import admin_apply, pop
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.message import MessageFormatError, MessageType, scan_header
from dledger.broker_adapter.results import TopicConfig
from dledger.broker_adapter.tables import (
    CQ,
    I64,
    KEYLOC,
    LOC,
    MAX_GROUP_BYTES,
    MAX_ID_BYTES,
    MAX_MSG_KEY_BYTES,
    MAX_TIME,
    MAX_TOPIC_BYTES,
    PENDING,
    PIN_HALF,
    PIN_TIMER,
    U64,
    Tables,
    pin_key,
    qkey,
    valid_name,
)
from dledger.storage_api import Entry, EntryKind

__all__ = ["Applier", "PutOutcome", "dlq_topic"]

struct_ii = struct.Struct(">Ii")
NO_TIMERS = MAX_TIME
MAX_TIME_STEP = 7 * 24 * 3_600_000  # log_time moves at most this far per command (a master's clock jump)
_FULL = "full"
_POISON = "poison"

log = logging.getLogger(__name__)


def _pending_pin(kind: bytes, pending: bytes) -> bytes:
    """The `pins` key of a `timers` / `half` row: its log index and the message's position in the entry."""
    return pin_key(int.from_bytes(pending[:8], "big"), kind, pending[8:12])


def _nonce_of(data: bytes) -> int:
    return int.from_bytes(data[4:12], "big", signed=True) if len(data) >= 12 else 0


def dlq_topic(group: str) -> str:
    return f"%DLQ%{group}"


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """Per message: (queue id, queue offset or -1 if waiting, accepted); plus the batch's store time."""

    placed: list[tuple[int, int, bool]]
    store_ts: int


class Applier:
    """Applies entries to `Tables`; runs on the node's event loop thread only."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables
        self.db = tables.db
        self.wanted: set[int] = set()
        self.outcomes: dict[int, Any] = {}
        self.on_noop: Callable[[Entry], None] | None = None
        self.on_queues_dropped: Callable[[], None] | None = None  # consume queues were deleted (readers' caches)
        self.skipped = 0
        self.failed: BaseException | None = None
        self._txn: Any = None
        self._batch: list[Entry] = []  # the entries in the open transaction
        self._poisoned: set[int] = set()  # entries of the batch whose command raised: applied as skipped
        self.outcomes_staged: dict[int, Any] = {}  # outcomes of the open transaction (handed over on commit)
        self._applied = 0
        self.last_index = 0  # the last entry given to `apply` in this process (no-ops and skipped ones too)
        self._flush_scheduled = False
        self._reset_caches()

    def restored(self, index: int) -> None:
        """The tables were replaced by an image at `index` (no transaction open): forget every cache."""
        self._applied = self.last_index = index
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._timer_min: int | None = None  # earliest delayed delivery time; None: unknown
        self.topics: dict[str, TopicConfig | None] = {}
        self.cqmax: dict[bytes, int] = {}
        self._dirty: set[bytes] = set()
        with self.t.env.begin() as txn:
            raw = txn.get(b"log_time", db=self.db["meta"])
            self.log_time = I64.unpack(raw)[0] if raw else 0

    # ---- reads shared with pop ----
    def topic(self, txn: Any, name: str) -> TopicConfig | None:
        if name not in self.topics:
            if not valid_name(name, MAX_TOPIC_BYTES):
                return None
            raw = txn.get(name.encode(), db=self.db["topics"])
            if raw is None:
                return None
            count, kind = struct_ii.unpack(raw)
            attr = txn.get(name.encode(), db=self.db["topicattr"])
            self.topics[name] = TopicConfig(name, count, MessageType(kind), attr[0] if attr else 6)
        return self.topics[name]

    def next_offset(self, txn: Any, qk: bytes) -> int:
        value = self.cqmax.get(qk)
        if value is None:
            raw = txn.get(qk, db=self.db["cqmax"])
            value = self.cqmax[qk] = U64.unpack(raw)[0] if raw else 0
        return value

    def enqueue(self, txn: Any, topic: str, queue: int, rec: tuple[int, int, int, int, int]) -> int:
        """Append (index, pos, size, tag hash, group hash) to a consume queue at `log_time`; returns the offset."""
        qk = topic.encode() + b"\0" + queue.to_bytes(4, "big")
        offset = self.next_offset(txn, qk)
        txn.put(qk + U64.pack(offset), CQ.pack(*rec, self.log_time), db=self.db["cq"])
        self.cqmax[qk] = offset + 1
        self._dirty.add(qk)
        return offset

    def ensure_topic(self, txn: Any, name: str, queue_count: int, kind: MessageType) -> TopicConfig:
        current = self.topic(txn, name)
        if current is not None and current.queue_count >= queue_count:
            return current
        cfg = TopicConfig(name, queue_count, *((current.message_type, current.perm) if current else (kind, 6)))
        txn.put(name.encode(), struct_ii.pack(cfg.queue_count, cfg.message_type), db=self.db["topics"])
        self.topics[name] = cfg
        return cfg

    def forget_queues(self, prefix: bytes) -> None:
        """Drop the cached next offsets of the consume queues whose keys start with `prefix` (deleted ones), and
        tell `on_queues_dropped` (a queue of the same name may start again at offset 0)."""
        for qk in [qk for qk in self.cqmax if qk.startswith(prefix)]:
            del self.cqmax[qk]
            self._dirty.discard(qk)
        if self.on_queues_dropped is not None:
            self.on_queues_dropped()

    # ---- apply ----
    def apply(self, entry: Entry) -> None:
        if self.failed is not None:
            raise RuntimeError(f"the broker tables failed earlier: {self.failed}")
        if entry.kind != EntryKind.NORMAL or not c.is_command(entry.data):
            # no-ops, config and foreign entries change nothing: no transaction (`applied` may lag behind
            # them; replaying them after a restart changes nothing either)
            self.skipped += entry.kind == EntryKind.NORMAL
            self.last_index = entry.index
            if entry.kind == EntryKind.NOOP and self.on_noop is not None:
                self.on_noop(entry)
            return
        if self._txn is None:
            self._txn = self.t.env.begin(write=True)
            self._batch = []
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no event loop (direct use): commit per entry
                self._flush_scheduled = False
        self._batch.append(entry)
        try:
            status = self._try(entry)
            if status is not None:
                self._replay(grow=status == _FULL)
        except BaseException:
            self._abort()
            raise
        self._applied = self.last_index = entry.index
        if not self._flush_scheduled:
            self.flush()

    def _try(self, entry: Entry) -> str | None:
        """Apply one command in the open transaction: None if done, `_FULL` if the map is full, `_POISON` if it
        raised anything but a storage error (it is then marked, and the batch must be applied again without
        it, so the command is skipped whole). Storage errors (`lmdb.Error` other than a key or value size
        error, which is an input error) propagate."""
        try:
            self._apply_command(self._txn, entry)
            return None
        except lmdb.MapFullError:
            return _FULL
        except lmdb.BadValsizeError as exc:
            error: Exception = exc
        except lmdb.Error:
            raise
        except Exception as exc:
            error = exc
        log.error("entry %d: the command failed; skipped on every replica alike", entry.index, exc_info=error)
        self._poisoned.add(entry.index)
        self.skipped += 1
        self.outcomes_staged.pop(_nonce_of(entry.data), None)
        return _POISON

    def _replay(self, grow: bool) -> None:
        """Abort the open transaction and apply the batch again in a new one, without the poisoned entries,
        doubling the map first if `grow` (the same entries on the same committed state give the same result).
        Any exception leaves the transaction to the caller's `_abort`."""
        while True:
            txn, self._txn = self._txn, None
            if txn is not None:
                with contextlib.suppress(Exception):
                    txn.abort()
            self._reset_caches()
            if grow:
                self.t.grow()
                grow = False
            self._txn = self.t.env.begin(write=True)
            for entry in self._batch:
                if entry.index in self._poisoned:
                    continue
                status = self._try(entry)
                if status is not None:
                    grow = status == _FULL
                    break
            else:
                return

    def flush(self) -> None:
        """Commit the open write transaction: every entry applied since the last flush, at once.

        Scheduled with `call_soon` by the first apply of a burst, so it runs before any reader or waiting
        put continues (they resume later in the same loop). Outcomes are handed to waiters only once the
        commit succeeded; on failure the store refuses to apply (the next `apply` raises, so the node fences)
        and to propose (`failed`), and LMDB still holds a consistent prefix (`applied` is in the same
        transaction)."""
        if self._txn is None:
            return
        try:
            while True:
                try:
                    for qk in self._dirty:
                        self._txn.put(qk, U64.pack(self.cqmax[qk]), db=self.db["cqmax"])
                    self._dirty.clear()
                    self._txn.put(b"log_time", I64.pack(self.log_time), db=self.db["meta"])
                    self._txn.put(b"applied", U64.pack(self._applied), db=self.db["meta"])
                    self._txn.commit()
                    break
                except lmdb.MapFullError:
                    self._replay(grow=True)
        except BaseException as exc:
            self.failed = exc
            log.exception("committing the broker tables failed; the store stops applying")
            self._abort()
            raise
        finally:
            self._txn = None
            self._batch = []
            self._poisoned.clear()
        self.outcomes.update(self.outcomes_staged)
        self.outcomes_staged.clear()

    def _abort(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            with contextlib.suppress(Exception):
                txn.abort()
        self._batch = []
        self._poisoned.clear()
        self.outcomes_staged.clear()
        self._reset_caches()

    def _apply_command(self, txn: Any, entry: Entry) -> None:
        """Apply one command. Malformed input (truncated bytes, names or ids that cannot be keys, numbers out of
        their fields' range) is decided from the entry's bytes alone and changes nothing (or, inside a PUT,
        rejects just that message); computed times are clamped below `MAX_TIME`."""
        data = entry.data
        try:
            if len(data) < 4:
                raise c.CommandError(f"a {len(data)}-byte entry")
            cmd = c.decode_command(data) if data[3] != c.Tag.PUT else c.put_head(data)
        except c.CommandError as exc:
            self.skipped += 1
            log.warning("entry %d: skipping a malformed adapter command: %s", entry.index, exc)
            return
        now = min(cmd.now, MAX_TIME)
        if self.log_time:  # (the first command sets it)
            now = min(now, self.log_time + MAX_TIME_STEP)
        if now > self.log_time:
            self.log_time = now
            if self._timer_min is None or self._timer_min <= self.log_time:
                self._release_timers(txn)
        outcome: Any = None
        if isinstance(cmd, c.PutHead):
            try:
                outcome = self._put(txn, entry, cmd.nonce in self.wanted)
            except c.CommandError as exc:
                self.skipped += 1
                log.warning("entry %d: skipping a malformed PUT: %s", entry.index, exc)
        elif isinstance(cmd, c.CreateTopic):
            kind = MessageType(cmd.message_type) if cmd.message_type in MessageType._value2member_map_ else None
            if kind is not None and 1 <= cmd.queue_count <= 1024 and valid_name(cmd.topic, MAX_TOPIC_BYTES):
                outcome = self.ensure_topic(txn, cmd.topic, cmd.queue_count, kind)
        elif isinstance(cmd, c.CommitOffset):
            names_ok = valid_name(cmd.group, MAX_GROUP_BYTES) and valid_name(cmd.topic, MAX_TOPIC_BYTES)
            if cmd.offset >= 0 and cmd.queue_id >= 0 and names_ok:
                key = qkey(cmd.group, cmd.topic) + cmd.queue_id.to_bytes(4, "big")
                txn.put(key, U64.pack(cmd.offset), db=self.db["offsets"])
                outcome = True
        elif isinstance(cmd, c.PopReceive | c.Ack | c.ChangeInvisible) and not valid_name(cmd.group, MAX_GROUP_BYTES):
            log.warning("entry %d: skipping a command with an invalid group name", entry.index)
        elif isinstance(cmd, c.PopReceive):
            outcome = pop.receive(self, txn, cmd, entry.index)
        elif isinstance(cmd, c.Ack):
            outcome = pop.ack(self, txn, cmd.group, cmd.handles)
        elif isinstance(cmd, c.ChangeInvisible):
            outcome = pop.change_invisible(self, txn, cmd, entry.index)
        elif isinstance(cmd, c.EndTransaction):
            outcome = self._end_transaction(txn, cmd)
        elif isinstance(cmd, c.UpdateTopic):
            outcome = admin_apply.update_topic(self, txn, cmd)
        elif isinstance(cmd, c.DeleteTopic):
            outcome = admin_apply.delete_topic(self, txn, cmd)
        elif isinstance(cmd, c.UpdateGroup):
            outcome = admin_apply.update_group(self, txn, cmd)
        elif isinstance(cmd, c.DeleteGroup):
            outcome = admin_apply.delete_group(self, txn, cmd)
        elif isinstance(cmd, c.Recall):
            outcome = admin_apply.recall(self, txn, cmd)
        if cmd.nonce in self.wanted:
            self.outcomes_staged[cmd.nonce] = outcome

    def _put(self, txn: Any, entry: Entry, report: bool) -> PutOutcome:
        """Enqueue a PUT's messages using the leader's table (`commands.PUT_META`); the keys alone are parsed.
        The outcome lists each message's placement only if `report` (someone here waits for it)."""
        data, index, now = entry.data, entry.index, self.log_time
        topics, metas, pos = c.put_view(data)
        placed: list[tuple[int, int, bool]] = []
        cq_items: list[tuple[bytes, bytes]] = []
        id_items: list[tuple[bytes, bytes]] = []
        queues: dict[tuple[int, int], list[Any]] = {}  # (topic index, queue) -> [queue key, next offset]
        configs = [self.topic(txn, topic) for topic in topics]
        counts = [cfg.queue_count if cfg is not None else 0 for cfg in configs]
        cq_pack, loc_pack, u64 = CQ.pack, LOC.pack, U64.pack
        for size, ti, queue, th, gh, delivery, flags, id_off, id_len, key_count in metas:
            at = pos
            pos += size
            if not 0 <= queue < counts[ti] or not 0 < id_len <= MAX_ID_BYTES or id_off + id_len > size:
                placed.append((queue, -1, False))
                continue
            msg_id = data[at + id_off : at + id_off + id_len]
            if flags or delivery > now:
                offset = -1
                pending = PENDING.pack(index, at, size, queue, th, gh) + qkey(topics[ti]) + msg_id
                if flags:
                    old = txn.get(msg_id, db=self.db["half"])
                    if old is not None:  # a prepared message with the same id: replaced
                        txn.delete(_pending_pin(PIN_HALF, old), db=self.db["pins"])
                    txn.put(msg_id, pending, db=self.db["half"])
                    txn.put(_pending_pin(PIN_HALF, pending), b"", db=self.db["pins"])
                else:
                    timer_key = u64(delivery) + u64(index) + at.to_bytes(4, "big")
                    txn.put(timer_key, pending, db=self.db["timers"])
                    txn.put(_pending_pin(PIN_TIMER, pending), b"", db=self.db["pins"])
                    if self._timer_min is not None:
                        self._timer_min = min(self._timer_min, delivery)
            else:
                slot = queues.get((ti, queue))
                if slot is None:
                    qk = topics[ti].encode() + b"\0" + queue.to_bytes(4, "big")
                    slot = queues[ti, queue] = [qk, self.next_offset(txn, qk)]
                offset = slot[1]
                slot[1] = offset + 1
                cq_items.append((slot[0] + u64(offset), cq_pack(index, at, size, th, gh, now)))
            id_items.append((msg_id, loc_pack(index, at, size, queue, offset, now)))
            if key_count:
                self._index_keys(txn, data, at, size, topics[ti], index)
            if report:
                placed.append((queue, offset, True))
        for qk, next_offset in queues.values():
            self.cqmax[qk] = next_offset
            self._dirty.add(qk)
        if cq_items:
            txn.cursor(db=self.db["cq"]).putmulti(cq_items)
        if id_items:
            txn.cursor(db=self.db["ids"]).putmulti(id_items)
        return PutOutcome(placed, now)

    def _index_keys(self, txn: Any, data: bytes, at: int, size: int, topic: str, index: int) -> None:
        try:
            keys = scan_header(data, at)[7]
        except MessageFormatError:
            return
        prefix = qkey(topic)
        for key in keys:
            if key and len(key.encode()) <= MAX_MSG_KEY_BYTES:
                txn.put(prefix + key.encode(), KEYLOC.pack(index, at, size), db=self.db["keys"])

    def _enqueue_pending(self, txn: Any, raw: bytes) -> int:
        """Enqueue a delayed or prepared message now, and record its offset under its id (dropped, with its id
        row, when its topic was deleted meanwhile: -1)."""
        index, pos, size, queue, th, gh = PENDING.unpack_from(raw)
        topic, _, msg_id = raw[PENDING.size :].partition(b"\0")
        if not admin_apply.topic_exists(self, txn, topic.decode()):
            txn.delete(msg_id, db=self.db["ids"])
            return -1
        offset = self.enqueue(txn, topic.decode(), queue, (index, pos, size, th, gh))
        self._set_offset(txn, msg_id, offset)
        return offset

    def _set_offset(self, txn: Any, msg_id: bytes, offset: int) -> None:
        raw = txn.get(msg_id, db=self.db["ids"])
        if raw is not None:
            index, pos, size, queue, _, _ = LOC.unpack(raw)
            txn.put(msg_id, LOC.pack(index, pos, size, queue, offset, self.log_time), db=self.db["ids"])

    def _release_timers(self, txn: Any) -> None:
        cursor = txn.cursor(db=self.db["timers"])
        due: list[tuple[bytes, bytes]] = []
        self._timer_min = NO_TIMERS
        if cursor.first():
            for key, raw in cursor:
                when = U64.unpack_from(key)[0]
                if when > self.log_time:
                    self._timer_min = when
                    break
                due.append((key, raw))
        for key, raw in due:
            txn.delete(key, db=self.db["timers"])
            txn.delete(_pending_pin(PIN_TIMER, raw), db=self.db["pins"])
            self._enqueue_pending(txn, raw)

    def _end_transaction(self, txn: Any, cmd: c.EndTransaction) -> bool:
        key = cmd.msg_id.encode()
        if not 0 < len(key) <= MAX_ID_BYTES:
            return False
        raw = txn.get(key, db=self.db["half"])
        if raw is None:
            return False
        txn.delete(key, db=self.db["half"])
        txn.delete(_pending_pin(PIN_HALF, raw), db=self.db["pins"])
        if cmd.commit:
            self._enqueue_pending(txn, raw)
        return True
