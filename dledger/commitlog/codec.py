"""The on-disk entry and index-record codec, with every layout constant beside it (like DLedgerEntryCoder).

Data entry: a 48-byte little-endian header followed by the body.

    offset size field
         0    4 magic        DATA_MAGIC
         4    4 size         48 + body length (the whole entry)
         8    8 index        the Raft log index (>= 1)
        16    8 term         the Raft term
        24    8 pos          the global byte position of this entry (segment name + offset in the file)
        32    4 channel      the EntryKind (DLedger's "channel" field carries the kind)
        36    4 chain CRC    crc32 of CHAIN_FIELDS (every header field but this one, in order), seeded
                             with the previous entry's chain CRC (0 before index 1)
        40    4 body CRC     crc32 of the body
        44    4 body length

The chain runs across segment boundaries unchanged: the first entry of a segment is seeded with the chain
CRC of the last entry of the previous segment, and after compaction with the chain CRC kept in the meta file
(`meta.py`). Because the body CRC is inside the chained fields, the chain covers every byte of the log, so a
spliced, reordered or duplicated file breaks it. After `truncate_after(i)` the next entry chains from entry
`i`, exactly as if the dropped entries had never been written.

Index record: 32 bytes, little-endian: magic 4 (INDEX_MAGIC), pos 8, size 4, index 8, term 8. Record `k` of a
segment's index file describes the segment's `k`-th entry, so entry `i` is at byte `32 * (i - first)`.

Invariant: `encode_batch` validates the whole batch before the caller writes a byte; `decode_run` never
returns an entry whose checks failed (it raises `CorruptEntryError` naming the file and byte offset).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, islice, repeat
from operator import add as _add
from operator import attrgetter
from operator import eq as _eq
from operator import le as _le

from dledger.commitlog.crc import FAST_FROM, body_crc
from dledger.commitlog.errors import CorruptEntryError, EntryTooLargeError
from dledger.storage_api import Entry, EntryKind

__all__ = [
    "CHAIN_FIELDS",
    "DATA_MAGIC",
    "HEADER",
    "HEADER_SIZE",
    "INDEX",
    "INDEX_MAGIC",
    "INDEX_SIZE",
    "MAX_CONFIG_BYTES",
    "MAX_ENTRY_BYTES",
    "Batch",
    "chain_crc",
    "check_entry",
    "decode_run",
    "encode_batch",
]

DATA_MAGIC = 0xD1ED6E01
INDEX_MAGIC = 0xD1ED1D01
HEADER = struct.Struct("<IIQQQIIII")
CHAIN_FIELDS = struct.Struct("<IIQQQIII")  # HEADER without the chain CRC
INDEX = struct.Struct("<IQIQQ")
HEADER_SIZE = HEADER.size
INDEX_SIZE = INDEX.size
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # RocketMQ's maxMessageSize; counts the 48-byte header too
MAX_CONFIG_BYTES = 1 << 20  # an encoded membership (hard state, snapshot header): sanity, not a real need
assert HEADER_SIZE == 48 and INDEX_SIZE == 32 and CHAIN_FIELDS.size == 44

_KINDS: dict[int, EntryKind] = {int(k): k for k in EntryKind}
_crc32 = zlib.crc32
_index, _term, _data, _kind = (attrgetter(f) for f in ("index", "term", "data", "kind"))

# Building an Entry through its frozen-dataclass __init__ costs about twice as much as setting its slots
# directly; reads build one per entry, so they use `_make_entry`, checked against __init__ right here.
_new = object.__new__
_set_index = Entry.__dict__["index"].__set__
_set_term = Entry.__dict__["term"].__set__
_set_data = Entry.__dict__["data"].__set__
_set_kind = Entry.__dict__["kind"].__set__


def _make_entry(index: int, term: int, data: bytes, kind: EntryKind) -> Entry:
    e: Entry = _new(Entry)
    _set_index(e, index)
    _set_term(e, term)
    _set_data(e, data)
    _set_kind(e, kind)
    return e


assert _make_entry(3, 2, b"x", EntryKind.NOOP) == Entry(3, 2, b"x", EntryKind.NOOP)


def chain_crc(prev: int, magic: int, size: int, index: int, term: int, pos: int, kind: int, bcrc: int, n: int) -> int:
    """The chain CRC of an entry with these header fields, seeded with the previous entry's chain CRC."""
    return _crc32(CHAIN_FIELDS.pack(magic, size, index, term, pos, kind, bcrc, n), prev)


@dataclass(slots=True)
class Batch:
    """An encoded batch: `data` and `index` bytes, and where new segments must start.

    `splits` lists `(entry_ordinal, data_offset, chain_before)` for each entry that opens a new segment because
    it did not fit in the room left (`chain_before` is the chain CRC of the entry before it); `last_chain`,
    `last_term` and `end_pos` describe the state after the batch.
    """

    data: bytes
    index: bytes
    splits: list[tuple[int, int, int]]
    last_chain: int
    last_term: int
    end_pos: int


def encode_batch(
    entries: Sequence[Entry],
    *,
    next_index: int,
    prev_term: int,
    prev_chain: int,
    pos: int,
    room: int,
    segment_bytes: int,
    max_entry_bytes: int,
) -> Batch:
    """Validate and encode `entries` (starting at `next_index`) for writing at global byte `pos`.

    `room` is what is left in the active segment (0 when there is none). Raises `ValueError` (or
    `EntryTooLargeError`) before returning anything when an entry is out of order, has a decreasing term,
    an unknown kind, or is too large.
    """
    limit = min(max_entry_bytes, segment_bytes)
    fast = _encode_fitting(entries, next_index, prev_term, prev_chain, pos, room, limit)
    if fast is not None:
        return fast
    return _encode_loop(entries, next_index, prev_term, prev_chain, pos, room, segment_bytes, max_entry_bytes)


def _encode_loop(
    entries: Sequence[Entry], next_index: int, prev_term: int, prev_chain: int, pos: int, room: int,
    segment_bytes: int, max_entry_bytes: int,
) -> Batch:  # fmt: skip
    """`encode_batch` one entry at a time: any batch, including those that open new segments or are invalid."""
    limit = min(max_entry_bytes, segment_bytes)
    parts: list[bytes] = []  # header, body, header, body, ...: joined once (cheaper than slice copies)
    add = parts.append
    records: list[bytes] = []
    add_record = records.append
    splits: list[tuple[int, int, int]] = []
    pack_hdr = HEADER.pack
    pack_chain = CHAIN_FIELDS.pack
    pack_idx = INDEX.pack
    kinds = _KINDS
    crc32 = _crc32
    start = pos
    chain = prev_chain
    term = prev_term
    expected = next_index
    try:
        for e in entries:
            body = e.data
            ln = len(body)
            size = HEADER_SIZE + ln
            t = e.term
            kind = e.kind
            if e.index != expected or t < term or size > limit or kind not in kinds:
                _refuse(e, expected, term, size, limit, max_entry_bytes, segment_bytes)
            if size > room:
                splits.append((expected - next_index, pos - start, chain))
                room = segment_bytes
            room -= size
            bcrc = body_crc(body) if ln >= FAST_FROM else crc32(body)
            chain = crc32(pack_chain(DATA_MAGIC, size, expected, t, pos, kind, bcrc, ln), chain)
            add(pack_hdr(DATA_MAGIC, size, expected, t, pos, kind, chain, bcrc, ln))
            add(body)
            add_record(pack_idx(INDEX_MAGIC, pos, size, expected, t))
            pos += size
            term = t
            expected += 1
    except struct.error as exc:  # a term or index beyond 64 bits
        raise ValueError(f"entry {expected} cannot be stored: {exc}") from exc
    data = b"".join(parts)
    index = b"".join(records)
    return Batch(data, index, splits, chain, term, pos)


def _encode_fitting(
    entries: Sequence[Entry], next_index: int, prev_term: int, prev_chain: int, pos: int, room: int, limit: int
) -> Batch | None:
    """`encode_batch` for the common case, field by field in C-level maps instead of a Python loop per entry
    (per-entry interpreter work is most of what encoding costs; the body CRC is `crc.py`'s): a valid batch that
    fits the room left in the active segment. None (nothing encoded) when the batch is empty, invalid, or needs a new
    segment: the caller's loop then encodes it or raises the precise error. Same bytes as the loop (the codec tests
    compare them).

    The chain CRC of entry k is crc32 of its chain fields seeded with entry k-1's: a running CRC, so one
    `accumulate` over the packed chain fields yields every entry's chain value."""
    n = len(entries)
    if not n:
        return None
    bodies = list(map(_data, entries))
    lens = list(map(len, bodies))
    sizes = list(map(_add, lens, repeat(HEADER_SIZE, n)))
    total = sum(sizes)
    if total > room or max(sizes) > limit:
        return None
    indexes = range(next_index, next_index + n)
    terms = list(map(_term, entries))
    kinds = list(map(_kind, entries))
    if (
        not all(map(_eq, map(_index, entries), indexes))
        or terms[0] < prev_term
        or not all(map(_le, terms, islice(terms, 1, None)))
        or not _KINDS.keys() >= set(kinds)
    ):
        return None
    positions = list(accumulate(sizes, initial=pos))
    try:
        bcrcs = list(map(body_crc if total >= (FAST_FROM + HEADER_SIZE) * n else _crc32, bodies))
        magic = repeat(DATA_MAGIC, n)
        fields = map(CHAIN_FIELDS.pack, magic, sizes, indexes, terms, positions, kinds, bcrcs, lens)
        chains = list(accumulate(fields, _chain_step, initial=prev_chain))
        del chains[0]
        heads = map(HEADER.pack, repeat(DATA_MAGIC, n), sizes, indexes, terms, positions, kinds, chains, bcrcs, lens)
        records = map(INDEX.pack, repeat(INDEX_MAGIC, n), positions, sizes, indexes, terms)
        index = b"".join(records)
    except (struct.error, OverflowError):  # a term beyond 64 bits: the loop says which entry
        return None
    parts: list[bytes] = [b""] * (2 * n)
    parts[0::2] = heads
    parts[1::2] = bodies
    return Batch(b"".join(parts), index, [], chains[-1], terms[-1], positions[-1])


def _chain_step(chain: int, fields: bytes) -> int:
    return _crc32(fields, chain)


def _refuse(e: Entry, expected: int, term: int, size: int, limit: int, max_entry: int, segment: int) -> None:
    """Raise the error that explains why `e` cannot be appended as entry `expected` (after term `term`)."""
    if e.index != expected:
        raise ValueError(f"append expected index {expected}, got {e.index}")
    if e.term < term:
        raise ValueError(f"entry {expected} has term {e.term} below the previous {term}")
    if size > limit:
        raise EntryTooLargeError(
            f"entry {expected} is {size} bytes with its header; the limit is {limit} bytes"
            f" (max entry {max_entry}, segment {segment})"
        )
    raise ValueError(f"entry {expected} has an unknown kind {e.kind!r}")


def check_entry(
    raw: bytes | bytearray | memoryview, off: int, avail: int, *, index: int, pos: int, prev_chain: int | None
) -> tuple[int, int, int, int, int, int]:
    """Check the entry at `raw[off:]` (with `avail` bytes there) expected to be `index` at global `pos`.

    Returns `(size, term, kind, chain, body_crc, body_len)`; raises `ValueError` with the reason when a
    check fails. `prev_chain=None` skips the chain check (the predecessor is unknown).
    """
    if avail < HEADER_SIZE:
        raise ValueError(f"torn header: {avail} of {HEADER_SIZE} bytes")
    magic, size, idx, term, epos, kind, chain, bcrc, ln = HEADER.unpack_from(raw, off)
    if magic != DATA_MAGIC:
        raise ValueError(f"bad magic {magic:#x}")
    if size != HEADER_SIZE + ln:
        raise ValueError(f"size {size} does not match body length {ln}")
    if idx != index:
        raise ValueError(f"holds index {idx}, expected {index}")
    if epos != pos:
        raise ValueError(f"holds position {epos}, expected {pos}")
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind}")
    if size > avail:
        raise ValueError(f"torn body: {avail - HEADER_SIZE} of {ln} bytes")
    body = memoryview(raw)[off + HEADER_SIZE : off + size]
    if (body_crc if ln >= FAST_FROM else _crc32)(body) != bcrc:
        raise ValueError("body CRC mismatch")
    if prev_chain is not None and chain_crc(prev_chain, magic, size, idx, term, epos, kind, bcrc, ln) != chain:
        raise ValueError("chain CRC mismatch")
    return size, term, kind, chain, bcrc, ln


def decode_run(
    raw: bytes,
    *,
    first_index: int,
    count: int,
    first_pos: int,
    prev_term: int,
    prev_chain: int | None,
    segment: str,
    file_offset: int,
) -> list[Entry]:
    """Decode `count` consecutive entries from `raw` (read from `segment` at `file_offset`), checking each.

    Checks magic, size, index, position, kind, non-decreasing terms (the first against `prev_term`), the body
    CRC, and the chain CRC (the first entry's against `prev_chain`, the predecessor's stored chain CRC, when
    it is known: then every header field of every returned entry is covered).
    Raises `CorruptEntryError` at the first bad entry: nothing corrupt is returned.
    """
    out: list[Entry] = []
    append = out.append
    unpack = HEADER.unpack_from
    pack_chain = CHAIN_FIELDS.pack
    crc32 = _crc32
    kinds = _KINDS
    new, set_index, set_term, set_data, set_kind = _new, _set_index, _set_term, _set_data, _set_kind
    end = len(raw)
    off = 0
    index = first_index
    pos = first_pos
    term = prev_term
    chain = prev_chain
    for _ in range(count):
        if off + HEADER_SIZE > end:
            raise CorruptEntryError(segment, file_offset + off, index, "entry runs past the end of the data file")
        magic, size, idx, t, epos, kind, c, bcrc, ln = unpack(raw, off)
        stop = off + size
        body = raw[off + HEADER_SIZE : stop]
        if (
            magic != DATA_MAGIC
            or idx != index
            or epos != pos
            or size != HEADER_SIZE + ln
            or stop > end
            or t < term
            or kind not in kinds
            or (body_crc if ln >= FAST_FROM else crc32)(body) != bcrc
            or (chain is not None and crc32(pack_chain(magic, size, idx, t, epos, kind, bcrc, ln), chain) != c)
        ):
            try:
                check_entry(raw, off, end - off, index=index, pos=pos, prev_chain=chain)
                reason = f"term {t} below the previous {term}"
            except ValueError as exc:
                reason = str(exc)
            raise CorruptEntryError(segment, file_offset + off, index, reason)
        e = new(Entry)  # = Entry(index, t, body, kind), without the frozen __init__'s cost
        set_index(e, index)
        set_term(e, t)
        set_data(e, body)
        set_kind(e, kinds[kind])
        append(e)
        chain = c
        term = t
        off = stop
        pos += size
        index += 1
    return out
