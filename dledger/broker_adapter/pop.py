"""Pop consumption (RocketMQ 5 SimpleConsumer) applied from replicated commands: receive, ack, change-invisible.

State per (group, topic, queue): `popcur` (every offset below it was delivered at least once; it starts at the
group's committed offset, else 0) and `inflight` records (delivered, not yet acknowledged), indexed by expiry
in `popexp`. All decisions use the command's replicated time `applier.log_time`, so every replica agrees.

Rules:
- a receive first redelivers expired in-flight messages (attempt + 1), then delivers new ones from `popcur`;
- an expired message that already had `max_attempts` deliveries moves to the group's dead-letter topic
  `%DLQ%<group>` (a consume queue record pointing at the same log bytes) instead of being redelivered;
- a receipt handle is `topic:queue:offset:seq`, where `seq` is the log index of the command that issued it;
  an ack or change-invisible with a stale `seq` (the message was redelivered since) is refused;
- a consume queue record whose log entry is before the leader's first index (`first_index` in the command:
  its body was compacted) is passed over, never recorded as in flight;
- FIFO delivery (a group configured FIFO; a group never configured: on FIFO and MIXED topics): at most one
  message of a message group is in flight; new messages are delivered in queue order and delivery stops at
  the first one whose message group is blocked (head-of-line, never out of order); a message without a message
  group never blocks nor waits;
- a configured group's `max_attempts` replaces the command's (`admin_model.GroupConfig`, in the same state);
- replicated counters per (group, topic) in `gstats`: first deliveries, redeliveries, acknowledgements,
  dead letters (`admin_apply.bump_stats`);
- where a group new to a topic starts: at offset 0 of each queue, unless the receive says `from_end`. Then
  the group's first receive on the topic (even before the topic exists) records its own log index and
  `log_time` as the group's start mark (`popcur` row `group NUL topic NUL 0xFFFFFFFF`), and each queue without
  a position of the group starts at its first record enqueued after that mark: the messages enqueued before
  the group's first receive are never delivered to it, every later one is. "Enqueued after" is judged by the
  record's enqueue time (a consume queue's times never decrease), not by the log index it points at: a dead
  letter, a released delayed message or a committed transaction points at bytes written before it was
  enqueued. Within the mark's millisecond the log index decides (exact for a record enqueued where it was
  written). A group that already has a position on any
  queue of the topic (a committed offset, or receives without `from_end`) keeps it and gets no mark (its
  queues without a position start at 0). A group configured to start at a timestamp starts each queue without a
  position at the first message stored at or after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dledger.broker_adapter import commands as c
from dledger.broker_adapter.admin_apply import bump_stats, group_config
from dledger.broker_adapter.admin_model import StartFrom
from dledger.broker_adapter.message import MessageType
from dledger.broker_adapter.results import TopicConfig
from dledger.broker_adapter.tables import (
    CQ,
    I64,
    MAX_TIME,
    MAX_TOPIC_BYTES,
    PIN_INFLIGHT,
    U64,
    Inflight,
    pin_key,
    qkey,
    valid_name,
)

__all__ = ["START_MARK", "Delivery", "PopContext", "format_handle", "parse_handle", "start_mark_key"]


class PopContext(Protocol):
    """What the Pop rules use of the store's applier (`dledger.broker_adapter.apply.Applier`): its tables, the
    replicated time of the command being applied, and its consume queue and topic writes."""

    db: dict[str, Any]
    log_time: int

    def next_offset(self, txn: Any, qk: bytes) -> int: ...

    def enqueue(self, txn: Any, topic: str, queue: int, rec: tuple[int, int, int, int, int]) -> int: ...

    def topic(self, txn: Any, name: str) -> TopicConfig | None: ...

    def ensure_topic(self, txn: Any, name: str, queue_count: int, kind: MessageType) -> TopicConfig: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One popped message: where it is and its new receipt handle."""

    topic: str
    queue_id: int
    queue_offset: int
    index: int
    pos: int
    size: int
    store_ts: int
    handle: str
    attempt: int
    invisible_until: int


def format_handle(topic: str, queue: int, offset: int, seq: int) -> str:
    return f"{topic}:{queue}:{offset}:{seq}"


def parse_handle(handle: str) -> tuple[str, int, int, int] | None:
    parts = handle.rsplit(":", 3)
    if len(parts) != 4 or not parts[0]:
        return None
    try:
        queue, offset, seq = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None
    if not 0 <= queue < 1 << 31 or not 0 <= offset < 1 << 63 or not 0 <= seq < 1 << 63:
        return None
    if not valid_name(parts[0], MAX_TOPIC_BYTES):
        return None
    return parts[0], queue, offset, seq


def _keys(group: str, topic: str, queue: int) -> bytes:
    return qkey(group, topic) + queue.to_bytes(4, "big")


START_MARK = b"\xff\xff\xff\xff"  # after `group NUL topic NUL` in `popcur`: never a queue id (those are < 1024)


def start_mark_key(group: str, topic: str) -> bytes:
    return qkey(group, topic) + START_MARK


def _before_mark(raw: bytes | None, mark: int, mark_ts: int | None) -> bool:
    """Whether a consume queue record was enqueued before the start mark (`mark_ts` None: a mark written
    without its time, judged by log index alone); a record that is gone (retention) is older than any mark."""
    if raw is None:
        return True
    index, *_, ts = CQ.unpack(raw)
    if mark_ts is None or ts == mark_ts:
        return bool(index < mark)
    return bool(ts < mark_ts)


def _first_at_or_after(a: PopContext, txn: Any, topic: str, queue: int, mark: int, mark_ts: int | None) -> int:
    """The first offset of the queue enqueued after the mark (its end if none): a binary search, as enqueue
    times never decrease along a consume queue."""
    cqk = topic.encode() + b"\0" + queue.to_bytes(4, "big")
    lo, hi = 0, a.next_offset(txn, cqk)
    while lo < hi:
        mid = (lo + hi) // 2
        if _before_mark(txn.get(cqk + U64.pack(mid), db=a.db["cq"]), mark, mark_ts):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _start_from_end(a: PopContext, txn: Any, cmd: c.PopReceive, seq: int, queue_count: int) -> None:
    """Give each queue without a position of the group its start after the group's start mark (see the rules)."""
    popcur, offsets = a.db["popcur"], a.db["offsets"]
    mark_key = start_mark_key(cmd.group, cmd.topic)
    raw = txn.get(mark_key, db=popcur)
    known = [q for q in range(queue_count) if txn.get(_keys(cmd.group, cmd.topic, q), db=popcur) is not None
             or txn.get(_keys(cmd.group, cmd.topic, q), db=offsets) is not None]  # fmt: skip
    mark_ts: int | None = None
    if raw is None:
        if known:  # the group consumed this topic before, from the beginning: its other queues start at 0
            mark = 0
        else:
            mark, mark_ts = seq, a.log_time
            txn.put(mark_key, U64.pack(mark) + I64.pack(mark_ts), db=popcur)
    else:
        mark = U64.unpack_from(raw)[0]
        mark_ts = I64.unpack_from(raw, U64.size)[0] if len(raw) >= U64.size + I64.size else None
    for queue in range(queue_count):
        if queue not in known:
            start = _first_at_or_after(a, txn, cmd.topic, queue, mark, mark_ts)
            txn.put(_keys(cmd.group, cmd.topic, queue), U64.pack(start), db=popcur)


def _start_at_time(a: PopContext, txn: Any, cmd: c.PopReceive, queue_count: int, start_ms: int) -> None:
    """Give each queue without a position of the group its first offset stored at or after `start_ms` (store
    times grow along a consume queue: they are the replicated `log_time`)."""
    popcur, offsets = a.db["popcur"], a.db["offsets"]
    for queue in range(queue_count):
        qk = _keys(cmd.group, cmd.topic, queue)
        if txn.get(qk, db=popcur) is not None or txn.get(qk, db=offsets) is not None:
            continue
        cqk = cmd.topic.encode() + b"\0" + queue.to_bytes(4, "big")
        lo, hi = 0, a.next_offset(txn, cqk)
        while lo < hi:
            mid = (lo + hi) // 2
            raw = txn.get(cqk + U64.pack(mid), db=a.db["cq"])
            if raw is None or CQ.unpack(raw)[5] < start_ms:
                lo = mid + 1
            else:
                hi = mid
        txn.put(qk, U64.pack(lo), db=popcur)


def _set_inflight(a: PopContext, txn: Any, qk: bytes, offset: int, old: Inflight | None, new: Inflight) -> None:
    db = a.db
    if old is not None:
        txn.delete(qk + U64.pack(old.until) + U64.pack(offset), db=db["popexp"])
        if old.index != new.index:
            txn.delete(pin_key(old.index, PIN_INFLIGHT, qk + U64.pack(offset)), db=db["pins"])
    txn.put(qk + U64.pack(offset), new.pack(), db=db["inflight"])
    txn.put(pin_key(new.index, PIN_INFLIGHT, qk + U64.pack(offset)), b"", db=db["pins"])
    txn.put(qk + U64.pack(new.until) + U64.pack(offset), b"", db=db["popexp"])


def _drop_inflight(a: PopContext, txn: Any, qk: bytes, offset: int, rec: Inflight) -> None:
    txn.delete(qk + U64.pack(offset), db=a.db["inflight"])
    txn.delete(qk + U64.pack(rec.until) + U64.pack(offset), db=a.db["popexp"])
    txn.delete(pin_key(rec.index, PIN_INFLIGHT, qk + U64.pack(offset)), db=a.db["pins"])


def _to_dlq(a: PopContext, txn: Any, group: str, rec: Inflight) -> None:
    dlq = f"%DLQ%{group}"
    a.ensure_topic(txn, dlq, 1, MessageType.NORMAL)
    a.enqueue(txn, dlq, 0, (rec.index, rec.pos, rec.size, rec.tag_hash, rec.group_hash))


class _Receive:
    def __init__(self, a: PopContext, txn: Any, cmd: c.PopReceive, seq: int, max_attempts: int) -> None:
        self.a, self.txn, self.cmd, self.seq = a, txn, cmd, seq
        self.max_attempts = max_attempts
        self.retried = self.dead = 0
        self.now = a.log_time
        self.until = min(self.now + max(cmd.invisible_ms, 0), MAX_TIME)
        self.out: list[Delivery] = []

    @property
    def budget(self) -> int:
        return self.cmd.max_count - len(self.out)

    def deliver(self, queue: int, offset: int, old: Inflight | None, loc: tuple[int, int, int, int, int, int]) -> None:
        index, pos, size, th, gh, ts = loc
        attempt = old.attempts + 1 if old is not None else 1
        rec = Inflight(self.until, attempt, self.seq, index, pos, size, th, gh, ts)
        _set_inflight(self.a, self.txn, _keys(self.cmd.group, self.cmd.topic, queue), offset, old, rec)
        handle = format_handle(self.cmd.topic, queue, offset, self.seq)
        self.out.append(Delivery(self.cmd.topic, queue, offset, index, pos, size, ts, handle, attempt, self.until))

    def inflight(self, queue: int) -> list[tuple[int, Inflight]]:
        """In-flight records of the queue, in offset order."""
        qk = _keys(self.cmd.group, self.cmd.topic, queue)
        cursor = self.txn.cursor(db=self.a.db["inflight"])
        out = []
        if cursor.set_range(qk):
            for key, raw in cursor:
                if not key.startswith(qk) or len(key) != len(qk) + 8:
                    break
                out.append((U64.unpack_from(key, len(qk))[0], Inflight.unpack(raw)))
        return out

    def expired(self, queue: int) -> list[tuple[int, Inflight]]:
        """In-flight records whose invisibility has passed, oldest expiry first."""
        qk = _keys(self.cmd.group, self.cmd.topic, queue)
        cursor = self.txn.cursor(db=self.a.db["popexp"])
        offsets = []
        if cursor.set_range(qk):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(qk) or U64.unpack_from(key, len(qk))[0] > self.now:
                    break
                offsets.append(U64.unpack_from(key, len(qk) + 8)[0])
        out = []
        for offset in offsets:
            raw = self.txn.get(qk + U64.pack(offset), db=self.a.db["inflight"])
            if raw is not None:
                out.append((offset, Inflight.unpack(raw)))
        return out

    def start_offset(self, queue: int) -> int:
        qk = _keys(self.cmd.group, self.cmd.topic, queue)
        raw = self.txn.get(qk, db=self.a.db["popcur"]) or self.txn.get(qk, db=self.a.db["offsets"])
        return U64.unpack(raw)[0] if raw else 0

    def new_messages(self, queue: int, blocked: set[int] | None) -> None:
        qk = _keys(self.cmd.group, self.cmd.topic, queue)
        offset = self.start_offset(queue)
        end = self.a.next_offset(self.txn, self.cmd.topic.encode() + b"\0" + queue.to_bytes(4, "big"))
        cqk = self.cmd.topic.encode() + b"\0" + queue.to_bytes(4, "big")
        start = offset
        while offset < end and self.budget > 0:
            raw = self.txn.get(cqk + U64.pack(offset), db=self.a.db["cq"])
            if raw is None:  # cannot happen: consume queues are dense
                offset += 1
                continue
            loc = CQ.unpack(raw)
            if loc[0] < self.cmd.first_index:  # its entry was compacted on the leader: passed over
                offset += 1
                continue
            if blocked is not None and loc[4]:  # (a message without a message group never blocks)
                if loc[4] in blocked:
                    break
                blocked.add(loc[4])
            self.deliver(queue, offset, None, loc)
            offset += 1
        if offset != start:
            self.txn.put(qk, U64.pack(offset), db=self.a.db["popcur"])

    def retry(self, queue: int, offset: int, rec: Inflight) -> bool:
        """Redeliver an expired record, or dead-letter it; True if it was redelivered."""
        if rec.attempts >= self.max_attempts:
            _drop_inflight(self.a, self.txn, _keys(self.cmd.group, self.cmd.topic, queue), offset, rec)
            _to_dlq(self.a, self.txn, self.cmd.group, rec)
            self.dead += 1
            return False
        loc = (rec.index, rec.pos, rec.size, rec.tag_hash, rec.group_hash, rec.store_ts)
        self.deliver(queue, offset, rec, loc)
        self.retried += 1
        return True

    def normal(self, queue: int) -> None:
        for offset, rec in self.expired(queue):
            if self.budget <= 0:
                break
            self.retry(queue, offset, rec)
        self.new_messages(queue, None)

    def fifo(self, queue: int) -> None:
        blocked: set[int] = set()
        for offset, rec in self.inflight(queue):
            free = not rec.group_hash  # no message group: delivered like a normal message
            if rec.until > self.now or rec.group_hash in blocked:
                if not free:
                    blocked.add(rec.group_hash)
                continue
            if (self.budget <= 0 or self.retry(queue, offset, rec)) and not free:
                blocked.add(rec.group_hash)
        self.new_messages(queue, blocked)


def receive(a: PopContext, txn: Any, cmd: c.PopReceive, seq: int) -> list[Delivery] | None:
    """Apply a POP_RECEIVE; None if the topic does not exist."""
    cfg = a.topic(txn, cmd.topic)
    if cmd.max_count <= 0 or cmd.max_attempts <= 0:
        return None
    group = group_config(a, txn, cmd.group)
    if group is not None and group.start == StartFrom.TIMESTAMP:
        if cfg is not None:
            _start_at_time(a, txn, cmd, cfg.queue_count, group.start_ms)
    elif cmd.from_end and valid_name(cmd.topic, MAX_TOPIC_BYTES):
        _start_from_end(a, txn, cmd, seq, cfg.queue_count if cfg is not None else 0)
    if cfg is None:
        return None
    n = cfg.queue_count
    if cmd.queue_id >= 0:
        queues = [cmd.queue_id] if cmd.queue_id < n else []
    else:
        queues = [(cmd.start_queue + k) % n for k in range(n)]
    r = _Receive(a, txn, cmd, seq, group.max_attempts if group is not None else cmd.max_attempts)
    fifo = group.fifo if group is not None else cfg.message_type in (MessageType.FIFO, MessageType.MIXED)
    for queue in queues:
        if r.budget <= 0:
            break
        if fifo:
            r.fifo(queue)
        else:
            r.normal(queue)
    if r.out or r.dead:
        first = len(r.out) - r.retried
        bump_stats(a, txn, cmd.group, cmd.topic, delivered=first, redelivered=r.retried, dead_lettered=r.dead)
    return r.out


def _find(a: PopContext, txn: Any, group: str, handle: str) -> tuple[bytes, int, Inflight] | None:
    parsed = parse_handle(handle)
    if parsed is None:
        return None
    topic, queue, offset, seq = parsed
    qk = _keys(group, topic, queue)
    raw = txn.get(qk + U64.pack(offset), db=a.db["inflight"])
    if raw is None:
        return None
    rec = Inflight.unpack(raw)
    return (qk, offset, rec) if rec.seq == seq else None


def ack(a: PopContext, txn: Any, group: str, handles: Sequence[str]) -> list[bool]:
    """Acknowledge each handle (False: stale or unknown); counts the acknowledgements per topic once."""
    out = []
    acked: dict[str, int] = {}
    for handle in handles:
        found = _find(a, txn, group, handle)
        if found is not None:
            _drop_inflight(a, txn, *found)
            topic = handle.rsplit(":", 3)[0]  # (a valid handle: `_find` parsed it)
            acked[topic] = acked.get(topic, 0) + 1
        out.append(found is not None)
    for topic, count in acked.items():
        bump_stats(a, txn, group, topic, acked=count)
    return out


def change_invisible(a: PopContext, txn: Any, cmd: c.ChangeInvisible, seq: int) -> tuple[str, int] | None:
    """A new (handle, invisible_until), or None for a stale or unknown handle."""
    found = _find(a, txn, cmd.group, cmd.handle)
    if found is None:
        return None
    qk, offset, rec = found
    new = Inflight(min(a.log_time + max(cmd.invisible_ms, 0), MAX_TIME), rec.attempts, seq, *_tail(rec))
    _set_inflight(a, txn, qk, offset, rec, new)
    parsed = parse_handle(cmd.handle)
    assert parsed is not None
    return format_handle(parsed[0], parsed[1], offset, seq), new.until


def _tail(rec: Inflight) -> tuple[int, int, int, int, int, int]:
    return rec.index, rec.pos, rec.size, rec.tag_hash, rec.group_hash, rec.store_ts
