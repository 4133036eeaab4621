"""The snapshot image of the broker tables: every LMDB database of `tables.py`, dumped and loaded record by record.

Layout, version 1 (numbers big-endian):

| part | fields |
| --- | --- |
| header | magic `DLBRKIMG`, u16 version, u16 tables layout (`tables.LAYOUT`), u64 index |
| record (any number) | u8 table id, u16 key length, u32 value length, key, value |
| trailer | u8 `0xFF`, u64 record count, u32 CRC32 of every byte before it |

Table ids are fixed below (never renumber; a new table takes a new id, a changed record layout a new tables
layout). An image written before a table existed simply has no records of it, and loads (the table is empty).
`meta[applied]` and `meta[layout]` are not records: the header carries them. The image holds only
derived state: message BODIES are not in it, they stay in the commit log, which the consume queues, the id and
key indexes and the pending rows point into by (log index, position, size). A replica restored from an image
at index I whose log starts after I (a follower reset by InstallSnapshot) reads the bodies of entries up to I
as removed, exactly like bodies dropped by retention (the reader reports `MESSAGE_WAS_REMOVING` or skips them).

Why a dump and not LMDB's own `copy`: it is portable (no page size, word size or LMDB version in it), and it
is parsed, never mapped, so a hostile or corrupt image is refused with `SnapshotError` instead of being trusted.

Invariants: `write_image` reads one LMDB read transaction (one point in time) and streams in ~1 MiB pieces,
in table-id then key order, so the same tables give the same bytes. `load_image` builds a NEW environment
beside the live one and checks everything (limits, no duplicate records, count, CRC, the end of the stream)
before returning it; on any error it removes what it built and the live tables are untouched.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import lmdb

from dledger.broker_adapter.tables import LAYOUT, MAX_KEY_BYTES, U32, U64, Tables
from dledger.node.state_machine import SnapshotError

__all__ = ["IMAGE_VERSION", "TABLE_IDS", "load_image", "write_image"]

MAGIC = b"DLBRKIMG"
IMAGE_VERSION = 1
HEADER = struct.Struct(">8sHHQ")
RECORD = struct.Struct(">BHI")
LENGTHS = struct.Struct(">HI")  # a record head after its table id
COUNT = struct.Struct(">Q")  # the trailer after its `END` id
END = 0xFF
TABLE_IDS = {
    "meta": 0,
    "topics": 1,
    "cqmax": 2,
    "cq": 3,
    "ids": 4,
    "keys": 5,
    "offsets": 6,
    "timers": 7,
    "half": 8,
    "popcur": 9,
    "inflight": 10,
    "popexp": 11,
    "pins": 12,
    "topicattr": 13,
    "groups": 14,
    "gstats": 15,
}
_NAMES = {tid: name for name, tid in TABLE_IDS.items()}
_HEADER_KEYS = (b"applied", b"layout")  # meta keys carried by the header
MAX_VALUE_BYTES = 1 << 16  # far above any record of `tables.py`: a longer one is corruption
CHUNK = 1 << 20
BATCH_BYTES = 16 << 20  # a load commits its write transaction every this many bytes
# `put` flags refusing a record already there: the whole key in a plain table, the (key, value) pair in dupsort `keys`
_NO_DUPLICATE: dict[bool, dict[str, bool]] = {False: {"overwrite": False}, True: {"dupdata": False}}


def write_image(tables: Tables, index: int, out: BinaryIO) -> None:
    """Stream the committed tables to `out` as an image at `index` (the caller flushed the applier)."""
    buf = bytearray(HEADER.pack(MAGIC, IMAGE_VERSION, LAYOUT, index))
    crc = 0
    count = 0
    with tables.env.begin() as txn:
        for name, tid in TABLE_IDS.items():
            for key, value in txn.cursor(db=tables.db[name]).iternext():
                if tid == 0 and key in _HEADER_KEYS:
                    continue
                buf += RECORD.pack(tid, len(key), len(value))
                buf += key
                buf += value
                count += 1
                if len(buf) >= CHUNK:
                    crc = zlib.crc32(buf, crc)
                    out.write(buf)
                    buf = bytearray()
    buf += bytes([END]) + COUNT.pack(count)
    buf += U32.pack(zlib.crc32(buf, crc))
    out.write(buf)


class _Source:
    """Exact reads from an untrusted stream, with a running CRC of what was consumed."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.buf = b""
        self.pos = 0
        self.crc = 0
        self.offset = 0  # bytes consumed before `buf`

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self._fill(n)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def _fill(self, n: int) -> None:
        self.crc = zlib.crc32(self.buf[: self.pos], self.crc)
        self.offset += self.pos
        parts = [self.buf[self.pos :]]
        have = len(parts[0])
        while have < n:
            chunk = self.src.read(max(CHUNK, n - have))
            if not chunk:
                raise SnapshotError(f"the image is truncated (it ends after {self.offset + have} bytes)")
            parts.append(chunk)
            have += len(chunk)
        self.buf, self.pos = b"".join(parts), 0

    def checksum(self) -> int:
        """CRC32 of every byte consumed so far."""
        return zlib.crc32(self.buf[: self.pos], self.crc)

    def at_end(self) -> bool:
        return self.pos == len(self.buf) and not self.src.read(1)


def load_image(src: BinaryIO, index: int, path: Path, map_size: int) -> Tables:
    """Build new tables at `path` (wiped first) from the image in `src`, which must be at `index`; returns them
    open, synced to disk. Raises `SnapshotError` for a bad image (or what `src` raised), leaving no `path`."""
    shutil.rmtree(path, ignore_errors=True)
    tables = Tables(path, map_size=map_size)
    try:
        _load(_Source(src), index, tables)
        tables.sync()
        return tables
    except BaseException:
        tables.close()
        shutil.rmtree(path, ignore_errors=True)
        raise


def _load(source: _Source, index: int, tables: Tables) -> None:
    magic, version, layout, at = HEADER.unpack(source.take(HEADER.size))
    if magic != MAGIC:
        raise SnapshotError("not a broker tables image (bad magic)")
    if version != IMAGE_VERSION:
        raise SnapshotError(f"broker image version {version} is not supported (this store reads {IMAGE_VERSION})")
    if layout != LAYOUT:
        raise SnapshotError(f"the image has tables layout {layout}, this store uses {LAYOUT}")
    if at != index:
        raise SnapshotError(f"the image covers index {at}, not the expected {index}")
    batch: list[tuple[str, bytes, bytes]] = []
    size = count = 0
    while True:
        tid = source.take(1)[0]
        if tid == END:
            break
        key_len, value_len = LENGTHS.unpack(source.take(LENGTHS.size))
        name = _NAMES.get(tid)
        if name is None:
            raise SnapshotError(f"record {count}: unknown table id {tid}")
        if not 0 < key_len <= MAX_KEY_BYTES or value_len > MAX_VALUE_BYTES:
            raise SnapshotError(f"record {count} of {name}: a {key_len}-byte key or {value_len}-byte value")
        raw = source.take(key_len + value_len)
        batch.append((name, raw[:key_len], raw[key_len:]))
        count += 1
        size += key_len + value_len
        if size >= BATCH_BYTES:
            _put(tables, batch)
            batch, size = [], 0
    total = COUNT.unpack(source.take(COUNT.size))[0]
    expected = source.checksum()
    crc = U32.unpack(source.take(U32.size))[0]
    if crc != expected:
        raise SnapshotError("the image is corrupt (CRC mismatch)")
    if total != count:
        raise SnapshotError(f"the image says {total} records but holds {count}")
    if not source.at_end():
        raise SnapshotError("the image has bytes after its trailer")
    _put(tables, batch)
    _put(tables, [("meta", b"applied", U64.pack(index)), ("meta", b"layout", U32.pack(LAYOUT))], header=True)


def _put(tables: Tables, batch: list[tuple[str, bytes, bytes]], header: bool = False) -> None:
    """Write `batch` in one transaction (growing the map as needed); a record already present is corruption."""
    while True:
        txn: Any = tables.env.begin(write=True)
        try:
            for name, key, value in batch:
                db = tables.db[name]
                if header:
                    txn.put(key, value, db=db)
                elif not txn.put(key, value, db=db, **_NO_DUPLICATE[name == "keys"]):
                    raise SnapshotError(f"a duplicate record in {name}")
            txn.commit()
            return
        except lmdb.MapFullError:
            _abort(txn)
            tables.grow()
        except lmdb.BadValsizeError as exc:
            _abort(txn)
            raise SnapshotError(f"a record that LMDB refuses: {exc}") from None
        except BaseException:
            _abort(txn)
            raise


def _abort(txn: Any) -> None:
    with contextlib.suppress(lmdb.Error):
        txn.abort()
