"""The store's meta file: the "base" of the log, i.e. what is known of the entry just before the first one.

After `compact_before` deletes old segments, entry `first_index - 1` is gone from the data, yet Raft needs
its term (`term_at(first_index - 1)`), the chain CRC of the next entry is seeded with its chain CRC, and the
first retained segment starts at the byte position right after it. `Base` records exactly that, and the
meta file stores it: 40 bytes, little-endian,

    magic 4 (META_MAGIC), version 4, base index 8, base term 8, base pos 8, base chain CRC 4, record CRC 4

written atomically (temp file, fsync, rename, fsync of the directory). A missing meta file means the
base of a log that was never compacted: index 0, term 0, pos 0, chain 0.

Two operations write it: `compact_before` (the base becomes the last entry of the last dropped segment) and
`reset` (the base becomes the snapshot's `(index, term)`, at the byte position just past the old log's end,
with chain CRC 0: positions keep growing across resets and the chain restarts, see `log.py`).

Invariants: the meta file is written before the segments it makes redundant are deleted, so a crash in
between leaves segments wholly below the base's position, which recovery deletes. The rename is the commit
point of both operations: a crash before it leaves the old log, after it the new one. A meta file that fails its
CRC is never guessed around: opening raises `CorruptStoreError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

from dledger.commitlog.errors import CorruptStoreError
from dledger.commitlog.fileops import FILE_MODE, FileOps

__all__ = ["META_NAME", "Base", "read_base", "write_base"]

META_NAME = "meta"
META_MAGIC = 0xD1ED3E7A
META_VERSION = 1
_RECORD = struct.Struct("<IIQQQI")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Base:
    """The entry before the first retained one: its index, term, chain CRC, and the byte position after it."""

    index: int = 0
    term: int = 0
    pos: int = 0
    chain: int = 0


def read_base(directory: str) -> Base:
    """The base stored in `directory`, or the empty base when there is no meta file."""
    path = os.path.join(directory, META_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(_RECORD.size + _CRC.size + 1)
    except FileNotFoundError:
        return Base()
    if len(raw) != _RECORD.size + _CRC.size:
        raise CorruptStoreError(f"{path}: meta file is {len(raw)} bytes, expected {_RECORD.size + _CRC.size}")
    (crc,) = _CRC.unpack_from(raw, _RECORD.size)
    if zlib.crc32(raw[: _RECORD.size]) != crc:
        raise CorruptStoreError(f"{path}: meta file fails its CRC")
    magic, version, index, term, pos, chain = _RECORD.unpack_from(raw)
    if magic != META_MAGIC:
        raise CorruptStoreError(f"{path}: bad magic {magic:#x}")
    if version != META_VERSION:
        raise CorruptStoreError(f"{path}: unsupported meta version {version}")
    return Base(index, term, pos, chain)


def write_base(directory: str, base: Base, ops: FileOps) -> None:
    """Durably replace the stored base (atomic: readers see the old or the new record, never a mix)."""
    record = _RECORD.pack(META_MAGIC, META_VERSION, base.index, base.term, base.pos, base.chain)
    raw = record + _CRC.pack(zlib.crc32(record))
    path = os.path.join(directory, META_NAME)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        ops.pwrite(fd, raw, 0)
        ops.datasync(fd)  # the new file's data and size
    finally:
        os.close(fd)
    ops.replace(tmp, path)
    ops.fsync_dir(directory)  # the rename
