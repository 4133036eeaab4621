"""The read path: consume queues, key and id indexes in LMDB, message bodies from the log.

Invariants: LMDB holds only the effect of applied entries, and applied <= commit, so a read never returns
anything beyond the commit index, on any replica. Each LMDB read is one short read transaction, closed
before awaiting the log, so the applier is never blocked by a reader. A body whose log entry was compacted
away is reported as removed (`MESSAGE_WAS_REMOVING` / skipped), never as a wrong message.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from dledger.broker_adapter.message import Message, MessageFormatError, MessageType, decode_message, tag_hash
from dledger.broker_adapter.results import GetResult, GetStatus, StoredMessage, TopicConfig
from dledger.broker_adapter.tables import CQ, KEYLOC, LOC, U64, Tables, qkey
from dledger.storage_api import CompactedError, Entry, UnavailableError

__all__ = ["MAX_SCAN", "Reader", "parse_tag_filter"]

MAX_SCAN = 800  # consume queue records examined per get (RocketMQ's maxFilterMessageCount / 20)
_CACHE = 256


def parse_tag_filter(expression: str | Iterable[str] | None) -> frozenset[str] | None:
    """`None`, `""` or `"*"`: everything; `"TagA || TagB"` or an iterable of tags: those tags only."""
    if expression is None:
        return None
    tags = [t.strip() for t in expression.split("||")] if isinstance(expression, str) else list(expression)
    tags = [t for t in tags if t]
    if not tags or "*" in tags:
        return None
    return frozenset(tags)


class Reader:
    """Reads for `MessageStore`; `read_entry(index)` is the node's committed-entry read."""

    def __init__(self, tables: Tables, read_entry: Callable[[int], Awaitable[Entry]], first_index: Callable[[], int]):
        self.t = tables
        self.db = tables.db
        self._read_entry = read_entry
        self._first_index = first_index
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._low: dict[bytes, tuple[int, int]] = {}  # queue -> (first index, min offset): see `_min`

    def forget(self) -> None:
        """Drop the caches (after the tables were replaced by a snapshot image)."""
        self._cache.clear()
        self._low.clear()

    def first_index(self) -> int:
        """The first index still in this replica's log."""
        return self._first_index()

    async def entry_data(self, index: int) -> bytes | None:
        data = self._cache.get(index)
        if data is None:
            try:
                data = (await self._read_entry(index)).data
            except (CompactedError, UnavailableError):
                return None
            self._cache[index] = data
            if len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
        return data

    async def body(self, index: int, pos: int, size: int) -> Message | None:
        data = await self.entry_data(index)
        if data is None:
            return None
        try:
            return decode_message(data[pos : pos + size])
        except MessageFormatError:
            return None

    # ---- tables ----
    def topic(self, name: str) -> TopicConfig | None:
        with self.t.env.begin() as txn:
            return self._topic(txn, name)

    def _topic(self, txn: Any, name: str) -> TopicConfig | None:
        raw = txn.get(name.encode(), db=self.db["topics"])
        if raw is None:
            return None
        count = int.from_bytes(raw[:4], "big")
        attr = txn.get(name.encode(), db=self.db["topicattr"])
        kind = MessageType(int.from_bytes(raw[4:8], "big", signed=True))
        return TopicConfig(name, count, kind, attr[0] if attr else 6)

    def topics(self) -> list[TopicConfig]:
        with self.t.env.begin() as txn:
            names = [bytes(k).decode() for k in txn.cursor(db=self.db["topics"]).iternext(values=False)]
            return [cfg for cfg in (self._topic(txn, n) for n in names) if cfg is not None]

    def max_offset(self, topic: str, queue: int) -> int:
        with self.t.env.begin() as txn:
            return self._max(txn, topic, queue)

    def _max(self, txn: Any, topic: str, queue: int) -> int:
        raw = txn.get(_cqk(topic, queue), db=self.db["cqmax"])
        return U64.unpack(raw)[0] if raw else 0

    def _record(self, txn: Any, topic: str, queue: int, offset: int) -> tuple[int, int, int, int, int, int] | None:
        raw = txn.get(_cqk(topic, queue) + U64.pack(offset), db=self.db["cq"])
        return CQ.unpack(raw) if raw is not None else None

    def _search(self, txn: Any, topic: str, queue: int, lo: int, hi: int, field: int, value: int) -> int:
        """The first offset in [lo, hi) whose record field (0: log index, 5: store ts) is >= value, else hi."""
        while lo < hi:
            mid = (lo + hi) // 2
            rec = self._record(txn, topic, queue, mid)
            if rec is not None and rec[field] >= value:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _min(self, txn: Any, topic: str, queue: int, hi: int) -> int:
        """The first offset whose body is still in the log (consume queues are never trimmed themselves).

        Log indexes do NOT grow with offsets (a released delayed message, a committed transactional message or
        a dead letter is enqueued after later entries), so this scans the records forward from a low-water
        mark: every offset below the mark points before an earlier first index, hence before this one too
        (the first index only grows). The mark lives in memory per queue, so each record is scanned at most
        once per process; records above the result may still be removed (reads skip them)."""
        first = self._first_index()
        if first <= 1:
            return 0
        prefix = _cqk(topic, queue)
        seen_first, low = self._low.get(prefix, (0, 0))
        if seen_first == first:
            return min(low, hi)
        cursor = txn.cursor(db=self.db["cq"])
        offset = hi
        if cursor.set_range(prefix + U64.pack(low)):
            for key, raw in cursor:
                if not key.startswith(prefix):
                    break
                if U64.unpack_from(raw)[0] >= first:  # CQ starts with the log index
                    offset = U64.unpack_from(key, len(prefix))[0]
                    break
        offset = min(offset, hi)
        self._low[prefix] = (first, offset)
        return offset

    def min_offset(self, topic: str, queue: int) -> int:
        with self.t.env.begin() as txn:
            return self._min(txn, topic, queue, self._max(txn, topic, queue))

    def offset_for_timestamp(self, topic: str, queue: int, timestamp_ms: int) -> int:
        """The first offset stored at or after `timestamp_ms` (max offset if none; store times never decrease)."""
        with self.t.env.begin() as txn:
            hi = self._max(txn, topic, queue)
            lo = self._min(txn, topic, queue, hi)
            return self._search(txn, topic, queue, lo, hi, 5, timestamp_ms)

    def committed_offset(self, group: str, topic: str, queue: int) -> int:
        with self.t.env.begin() as txn:
            raw = txn.get(qkey(group, topic) + queue.to_bytes(4, "big"), db=self.db["offsets"])
        return U64.unpack(raw)[0] if raw else -1

    # ---- messages ----
    async def get_messages(
        self, topic: str, queue: int, offset: int, max_count: int, max_bytes: int, tags: frozenset[str] | None
    ) -> GetResult:
        limit = max_count if tags is None else max(MAX_SCAN, max_count)
        prefix = _cqk(topic, queue)
        records: list[tuple[int, tuple[int, int, int, int, int, int]]] = []
        with self.t.env.begin() as txn:
            cfg = self._topic(txn, topic)
            if cfg is None or not 0 <= queue < cfg.queue_count:
                return GetResult(GetStatus.NO_MATCHED_LOGIC_QUEUE, 0, 0, 0)
            hi = self._max(txn, topic, queue)
            lo = self._min(txn, topic, queue, hi)
            if hi == 0:
                return GetResult(GetStatus.NO_MESSAGE_IN_QUEUE, 0, lo, hi)
            if offset < lo:
                return GetResult(GetStatus.OFFSET_TOO_SMALL, lo, lo, hi)
            if offset == hi:
                return GetResult(GetStatus.OFFSET_OVERFLOW_ONE, offset, lo, hi)
            if offset > hi:
                return GetResult(GetStatus.OFFSET_OVERFLOW_BADLY, lo if lo == 0 else hi, lo, hi)
            cursor = txn.cursor(db=self.db["cq"])
            if cursor.set_key(prefix + U64.pack(offset)):
                for key, raw in cursor:
                    if len(records) >= limit or not key.startswith(prefix):
                        break
                    records.append((U64.unpack_from(key, len(prefix))[0], CQ.unpack(raw)))
        hashes = {tag_hash(t) for t in tags} if tags is not None else None
        found: list[StoredMessage] = []
        size = 0
        next_offset = offset
        removed = 0
        for o, (index, pos, length, th, _, ts) in records:
            if len(found) >= max_count or (found and size + length > max_bytes):
                break
            next_offset = o + 1
            if hashes is not None and th not in hashes:
                continue
            msg = await self.body(index, pos, length)
            if msg is None:
                removed += 1
                continue
            if tags is not None and msg.tags not in tags:
                continue
            found.append(StoredMessage(msg, topic, queue, o, index, ts))
            size += length
        if found:
            return GetResult(GetStatus.FOUND, next_offset, lo, hi, found)
        status = GetStatus.MESSAGE_WAS_REMOVING if removed else GetStatus.NO_MATCHED_MESSAGE
        return GetResult(status, next_offset, lo, hi)

    async def query_by_id(self, msg_id: str) -> StoredMessage | None:
        with self.t.env.begin() as txn:
            raw = txn.get(msg_id.encode(), db=self.db["ids"])
        if raw is None:
            return None
        index, pos, size, queue, offset, ts = LOC.unpack(raw)
        msg = await self.body(index, pos, size)
        if msg is None:
            return None
        return StoredMessage(msg, msg.topic, queue, offset, index, ts)

    async def query_by_key(
        self, topic: str, key: str, max_count: int, begin_ms: int, end_ms: int
    ) -> list[StoredMessage]:
        """The newest `max_count` messages of `topic` with `key`, stored within [begin_ms, end_ms], oldest first."""
        with self.t.env.begin() as txn:
            cursor = txn.cursor(db=self.db["keys"])
            locs = (
                [KEYLOC.unpack(v) for v in cursor.iternext_dup()] if cursor.set_key(qkey(topic) + key.encode()) else []
            )
        out: list[StoredMessage] = []
        for index, pos, size in reversed(locs):
            if len(out) >= max_count:
                break
            msg = await self.body(index, pos, size)
            if msg is None or msg.topic != topic or key not in msg.keys:
                continue
            stored = await self.query_by_id(msg.msg_id)
            if stored is None or stored.log_index != index or not begin_ms <= stored.store_timestamp <= end_ms:
                continue
            out.append(stored)
        out.reverse()
        return out


def _cqk(topic: str, queue: int) -> bytes:
    return topic.encode() + b"\0" + queue.to_bytes(4, "big")
