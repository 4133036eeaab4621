"""The snapshot file format: its layout constants, header codec and checks, and the CRC arithmetic it needs.

A snapshot file, little-endian:

    offset   size  field
         0      4  magic          SNAPSHOT_MAGIC
         4      2  version        1
         6      2  flags          0 (reserved)
         8      8  index          SnapshotMeta.index: the last entry the image covers
        16      8  term           SnapshotMeta.term: that entry's term
        24      8  body length    b
        32      4  config length  n, at most MAX_CONFIG_BYTES
        36      n  config         SnapshotMeta.config (the encoded membership)
    36 + n      4  header CRC     crc32 of bytes 0 .. 36 + n
    40 + n      b  body           the state machine's image
    40 + n + b  4  file CRC       crc32 of every byte before it (header and body)

The header CRC lets `latest()` and `list()` trust a header without reading the body; the file CRC covers
everything. The writer learns the body length only at the end, so it writes the header last and combines the
CRCs (`crc_extend`: crc32(A + B) from crc32(A), crc32(B) and len(B)) instead of reading the body back.
A transfer's "file CRC" is the trailer value, not a CRC over the whole file: a CRC-32 over data followed by
its own CRC is a constant, which would check nothing.

Invariant: every value read from a file is untrusted; `parse_header` checks magic, version, flags, the config
length against its limit before allocating, the header CRC, and that the sizes add up to the file's length.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from dledger.commitlog.codec import MAX_CONFIG_BYTES
from dledger.commitlog.errors import SnapshotCorruptError
from dledger.commitlog.fileops import FileOps
from dledger.storage_api import SnapshotMeta

__all__ = [
    "FIXED",
    "READ_CHUNK",
    "SNAPSHOT_MAGIC",
    "SNAPSHOT_VERSION",
    "TRAILER",
    "Header",
    "check_meta",
    "crc_extend",
    "encode_header",
    "header_size",
    "parse_header",
    "verify_file",
]

SNAPSHOT_MAGIC = 0xD1ED5A75
SNAPSHOT_VERSION = 1
FIXED = struct.Struct("<IHHQQQI")
TRAILER = struct.Struct("<I")  # also the header CRC
READ_CHUNK = 1 << 20  # read size when checking or streaming a file
_MAX_U64 = (1 << 64) - 1
assert FIXED.size == 36


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header: the meta, the body length, and where the body starts."""

    meta: SnapshotMeta
    body_len: int

    @property
    def size(self) -> int:
        return header_size(len(self.meta.config))

    @property
    def total(self) -> int:
        """The whole file's length: header, body, trailer."""
        return self.size + self.body_len + TRAILER.size


def header_size(config_len: int) -> int:
    return FIXED.size + config_len + TRAILER.size


def check_meta(meta: SnapshotMeta) -> None:
    """Refuse a meta that cannot be stored (`ValueError` / `TypeError`) before anything is written."""
    if not isinstance(meta, SnapshotMeta):
        raise TypeError(f"expected a SnapshotMeta, not {type(meta).__name__}")
    for name in ("index", "term"):
        value = getattr(meta, name)
        if type(value) is not int or not 0 <= value <= _MAX_U64:
            raise ValueError(f"snapshot {name} must be an int in [0, 2**64), not {value!r}")
    if type(meta.config) is not bytes:
        raise ValueError(f"snapshot config must be bytes, not {type(meta.config).__name__}")
    if len(meta.config) > MAX_CONFIG_BYTES:
        raise ValueError(f"snapshot config is {len(meta.config)} bytes; the limit is {MAX_CONFIG_BYTES}")


def encode_header(meta: SnapshotMeta, body_len: int) -> bytes:
    head = FIXED.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, meta.index, meta.term, body_len, len(meta.config))
    head += meta.config
    return head + TRAILER.pack(zlib.crc32(head))


def parse_header(read: Callable[[int, int], bytes], file_len: int, where: str) -> Header:
    """Parse and check the header of a `file_len`-byte file; `read(offset, n)` returns its bytes (fewer at the
    end). Raises `SnapshotCorruptError` naming `where` and what is wrong."""
    raw = read(0, FIXED.size)
    if len(raw) < FIXED.size:
        raise SnapshotCorruptError(f"{where}: truncated: {len(raw)} bytes, shorter than a snapshot header")
    magic, version, flags, index, term, body_len, config_len = FIXED.unpack(raw)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotCorruptError(f"{where}: bad magic {magic:#x}: not a snapshot file")
    if version != SNAPSHOT_VERSION or flags != 0:
        raise SnapshotCorruptError(f"{where}: unsupported snapshot version {version} (flags {flags:#x})")
    if config_len > MAX_CONFIG_BYTES:
        raise SnapshotCorruptError(f"{where}: header says its config is {config_len} bytes, over the limit")
    rest = read(FIXED.size, config_len + TRAILER.size)
    if len(rest) < config_len + TRAILER.size:
        raise SnapshotCorruptError(f"{where}: truncated inside the header")
    config = rest[:config_len]
    (crc,) = TRAILER.unpack_from(rest, config_len)
    if zlib.crc32(config, zlib.crc32(raw)) != crc:
        raise SnapshotCorruptError(f"{where}: the header fails its CRC")
    header = Header(SnapshotMeta(index, term, bytes(config)), body_len)
    if header.total != file_len:
        what = "truncated" if header.total > file_len else "has trailing bytes"
        raise SnapshotCorruptError(f"{where}: {what}: {file_len} bytes, the header says {header.total}")
    return header


def verify_file(ops: FileOps, fd: int, header: Header, where: str) -> int:
    """Check the file CRC of the whole snapshot file open at `fd` (its header already parsed); returns it."""
    end = header.total - TRAILER.size
    crc, off = 0, 0
    while off < end:
        data = ops.pread(fd, min(READ_CHUNK, end - off), off)
        if not data:
            raise SnapshotCorruptError(f"{where}: truncated at byte {off}")
        crc = zlib.crc32(data, crc)
        off += len(data)
    raw = ops.pread(fd, TRAILER.size, end)
    if len(raw) < TRAILER.size:
        raise SnapshotCorruptError(f"{where}: truncated in the trailer")
    (stored,) = TRAILER.unpack(raw)
    if crc != stored:
        raise SnapshotCorruptError(f"{where}: the file fails its CRC (computed {crc:#010x}, stored {stored:#010x})")
    return crc


# crc_extend: zlib's crc32(data, v) is affine in v: crc32(data, v) = Z_n(v) ^ crc32(data, 0), where the linear
# map Z_n (n = len(data)) is "feed n zero bytes" and depends on n only. So crc32(A + B) = crc32(B, crc32(A)) =
# Z_len(B)(crc32(A)) ^ crc32(B). Z_1 is a 32x32 bit matrix (column i = image of bit i); Z_n = Z_1 ** n, applied
# by square-and-multiply with the squares Z_(2**k) computed at import (a few milliseconds).


def _apply(matrix: list[int], v: int) -> int:
    out = 0
    i = 0
    while v:
        if v & 1:
            out ^= matrix[i]
        v >>= 1
        i += 1
    return out


_SQUARES = [[zlib.crc32(b"\0", 1 << i) ^ zlib.crc32(b"\0", 0) for i in range(32)]]  # _SQUARES[k] is Z_(2**k)
for _k in range(63):
    _SQUARES.append([_apply(_SQUARES[-1], col) for col in _SQUARES[-1]])


def crc_extend(crc_a: int, crc_b: int, len_b: int) -> int:
    """crc32(A + B), given crc32(A), crc32(B) and len(B) (< 2**64)."""
    v, k = crc_a, 0
    while len_b:
        if len_b & 1:
            v = _apply(_SQUARES[k], v)
        len_b >>= 1
        k += 1
    return v ^ crc_b
