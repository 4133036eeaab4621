"""The adapter's LMDB environment (`<store_dir>/broker`): named databases, key builders and record layouts.

Every database is derived state: the applier writes all of them, plus `meta[applied]`, in one write
transaction per applied entry, so after any crash LMDB holds exactly the effect of entries `1..applied`
and the node replays the log from `applied + 1`. A missing, unreadable or other-layout environment is
wiped and rebuilt by replaying the log from index 1 (or, once the log is compacted, by restoring a snapshot:
`applied` then says 0, below the snapshot). A restore builds new tables in `<store_dir>/broker.restore` and
switches to them with one atomic rename of `data.mdb` (`switch_to`).

Keys: names are UTF-8 joined by NUL (names never contain NUL: the store validates them); numbers are
big-endian, so LMDB's byte order is numeric order.

| db | key | value |
| --- | --- | --- |
| meta | `applied`, `log_time`, `layout` | u64 / i64 / u32 |
| topics | topic | `>Ii` queue count, message type |
| cqmax | topic NUL u32 queue | u64 next queue offset |
| cq | topic NUL u32 queue u64 offset | `CQ` record: log index, pos, size, tag hash, group hash, store ts |
| ids | msg id | `LOC` record: log index, pos, size, queue, queue offset (-1 until enqueued), store ts |
| keys (dupsort) | topic NUL key | `>QII` log index, pos, size |
| offsets | group NUL topic NUL u32 queue | u64 committed offset |
| timers | u64 deliver ts, u64 log index, u32 pos | `PENDING` record + topic (delayed messages) |
| half | msg id | `PENDING` record + topic (prepared transactional messages) |
| popcur | group NUL topic NUL u32 queue | u64 next offset never popped by the group |
| popcur | group NUL topic NUL `FF FF FF FF` | u64 log index, i64 log_time of the first `from_end` receive (`pop.py`) |
| inflight | group NUL topic NUL u32 queue u64 offset | `INFLIGHT` record |
| popexp | group NUL topic NUL u32 queue u64 invisible-until u64 offset | empty (expiry order) |
| pins | u64 log index, kind (`t` timer / `h` half / `i` in flight), reference | empty |
| topicattr | topic | `>B` permission bits (no row: read and write; `admin_model.py`) |
| groups | group | `admin_model.GROUP` record: the consumer group's settings (no row: the broker's defaults) |
| gstats | group NUL topic | `admin_model.STATS` record: deliveries, redeliveries, acknowledgements, dead letters |

`topicattr`, `groups` and `gstats` came after layout 2 without changing it: an environment or an image without
them reads them as empty (no admin settings, zero counters).

`pins` has one record per row of `timers`, `half` and `inflight` (kept with them in the same transaction),
keyed by the log index that row points into: its first key is the oldest log entry still needed by a message
that is not in a consume queue yet or not yet acknowledged; retention never compacts it (see `retention.py`).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
from dataclasses import dataclass
from typing import Any

import lmdb

__all__ = [
    "CQ",
    "INFLIGHT",
    "LAYOUT",
    "LOC",
    "MAX_GROUP_BYTES",
    "MAX_ID_BYTES",
    "MAX_MSG_KEY_BYTES",
    "MAX_TIME",
    "MAX_TOPIC_BYTES",
    "PENDING",
    "Tables",
    "pin_key",
    "qkey",
    "valid_name",
]

LAYOUT = 2  # 2: `pins`
MAX_MAP = 1 << 44
# Input limits enforced at apply (an entry breaking them is skipped, identically on every replica) and, stricter,
# on the leader. They keep every LMDB key within its 511-byte limit and every time inside its i64 / u64 field:
# group NUL topic NUL u32 queue u64 until u64 offset <= 127 + 1 + 255 + 1 + 4 + 16 bytes.
MAX_KEY_BYTES = 511  # LMDB's key size limit (and keys may not be empty)
MAX_ID_BYTES = MAX_KEY_BYTES  # message ids (keys of `ids` and `half`)
MAX_GROUP_BYTES = 127  # consumer group names (RocketMQ's limit)
MAX_TOPIC_BYTES = 255  # topic names: RocketMQ's 127 plus room for `%DLQ%<group>`
MAX_MSG_KEY_BYTES = MAX_KEY_BYTES - MAX_TOPIC_BYTES - 1  # message keys (`keys` is keyed by topic NUL key)
MAX_TIME = 1 << 62  # log_time and every time computed from it stay below this
CQ = struct.Struct(">QIIIIq")  # log index, pos, size, tag hash, group hash, store ts
LOC = struct.Struct(">QIIiqq")  # log index, pos, size, queue id, queue offset, store ts
KEYLOC = struct.Struct(">QII")
PENDING = struct.Struct(">QIIiII")  # log index, pos, size, queue id, tag hash, group hash; then topic bytes
INFLIGHT = struct.Struct(">qIqQIIIIq")  # until, attempts, handle seq, index, pos, size, tag hash, group hash, ts
U64 = struct.Struct(">Q")
I64 = struct.Struct(">q")
U32 = struct.Struct(">I")
_DBS = (
    "meta", "topics", "cqmax", "cq", "ids", "offsets", "timers", "half", "popcur", "inflight", "popexp", "pins",
    "topicattr", "groups", "gstats",
)  # fmt: skip
PIN_TIMER = b"t"
PIN_HALF = b"h"
PIN_INFLIGHT = b"i"


def pin_key(index: int, kind: bytes, ref: bytes) -> bytes:
    """The `pins` key of a row of `timers` / `half` / `inflight` that points into log entry `index`."""
    return U64.pack(index) + kind + ref


def valid_name(name: str, limit: int) -> bool:
    """A topic or group name that can be part of a key: 1..limit UTF-8 bytes, no NUL."""
    raw = name.encode("utf-8", "surrogatepass")
    return 0 < len(raw) <= limit and b"\0" not in raw


def qkey(*names: str) -> bytes:
    """`a NUL b NUL ` for the name parts of a key (each part followed by NUL)."""
    return b"".join(n.encode() + b"\0" for n in names)


@dataclass(frozen=True, slots=True)
class Inflight:
    until: int
    attempts: int
    seq: int
    index: int
    pos: int
    size: int
    tag_hash: int
    group_hash: int
    store_ts: int

    def pack(self) -> bytes:
        return INFLIGHT.pack(
            self.until,
            self.attempts,
            self.seq,
            self.index,
            self.pos,
            self.size,
            self.tag_hash,
            self.group_hash,
            self.store_ts,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Inflight:
        return cls(*INFLIGHT.unpack(raw))


class Tables:
    """The open environment and its database handles. Not thread-safe for writes: the applier writes."""

    def __init__(self, path: pathlib.Path, *, map_size: int = 1 << 36) -> None:
        self.path = path
        self.map_size = map_size
        self.rebuilt = False
        self.db: dict[str, Any] = {}  # one dict for the life of the object: holders see a reopen
        shutil.rmtree(self.staging_path(), ignore_errors=True)  # a restore that did not switch (see `switch_to`)
        try:
            self._open()
            with self.env.begin() as txn:
                layout = txn.get(b"layout", db=self.db["meta"])
            if layout is not None and U32.unpack(layout)[0] == 1:
                self._add_pins()
            elif layout is not None and U32.unpack(layout)[0] != LAYOUT:
                raise lmdb.Error(f"layout {U32.unpack(layout)[0]} is not {LAYOUT}")
        except lmdb.Error:
            self.close()
            shutil.rmtree(path, ignore_errors=True)
            self.rebuilt = True
            self._open()
        with self.env.begin(write=True) as txn:
            txn.put(b"layout", U32.pack(LAYOUT), db=self.db["meta"])

    def _open(self) -> None:
        self.path.mkdir(0o700, parents=True, exist_ok=True)  # the store's files are its owner's only
        # sync=False: a process crash keeps every committed transaction (the OS has the pages); after an
        # OS crash a torn environment fails to open or lags, and is rebuilt or replayed from the log.
        self.env: Any = lmdb.open(str(self.path), map_size=self.map_size, max_dbs=len(_DBS) + 1, sync=False, mode=0o600)
        self.db.clear()
        for name in _DBS:
            self.db[name] = self.env.open_db(name.encode(), dupsort=False)
        self.db["keys"] = self.env.open_db(b"keys", dupsort=True)

    def _add_pins(self) -> None:
        """Layout 1 to 2: index the existing `timers`, `half` and `inflight` rows in `pins` (no rebuild, which
        a compacted log could not serve)."""
        with self.env.begin(write=True) as txn:
            for kind, name in ((PIN_TIMER, "timers"), (PIN_HALF, "half")):
                for _, raw in txn.cursor(db=self.db[name]).iternext():
                    pin = pin_key(U64.unpack_from(raw)[0], kind, bytes(raw[8:12]))
                    txn.put(pin, b"", db=self.db["pins"])
            for key, raw in txn.cursor(db=self.db["inflight"]).iternext():
                txn.put(pin_key(Inflight.unpack(raw).index, PIN_INFLIGHT, bytes(key)), b"", db=self.db["pins"])

    def grow(self) -> None:
        """Double the map size (no transaction of this process may be open)."""
        if self.map_size >= MAX_MAP:
            raise lmdb.MapFullError(f"the LMDB map is full at its limit of {self.map_size} bytes")
        self.map_size *= 2
        self.env.set_mapsize(self.map_size)

    def applied(self) -> int:
        with self.env.begin() as txn:
            raw = txn.get(b"applied", db=self.db["meta"])
        return U64.unpack(raw)[0] if raw else 0

    def first_pinned(self) -> int | None:
        """The oldest log index a pending, prepared or in-flight message points into (None: none)."""
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.db["pins"])
            return U64.unpack_from(cursor.key())[0] if cursor.first() else None

    def staging_path(self) -> pathlib.Path:
        """Where a restore builds the new tables before `switch_to` (beside these, on the same file system)."""
        return self.path.with_name(self.path.name + ".restore")

    def switch_to(self, staged: Tables) -> None:
        """Replace these tables by `staged` (synced, built at `staging_path()`), and reopen on them.

        Crash-safe: LMDB keeps everything in `data.mdb`, and the switch is one atomic rename of the staged, fsynced
        file over it, so a crash leaves the old tables or the new ones; a leftover staging directory is removed
        when the tables are next opened. No transaction of this process may be open."""
        staged.sync()
        staged.close()
        data = staged.path / "data.mdb"
        self.close()
        try:
            _fsync(data)
            os.replace(data, self.path / "data.mdb")  # the switch
            _fsync(self.path)
            (self.path / "lock.mdb").unlink(missing_ok=True)  # reader slots and txn id of the old file
            self.map_size = max(self.map_size, staged.map_size)
        finally:
            self._open()
        shutil.rmtree(staged.path, ignore_errors=True)

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        env = getattr(self, "env", None)
        if env is not None:
            env.close()
            self.env = None


def _fsync(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
