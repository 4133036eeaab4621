"""The on-disk layout: header and index record fields sit at their documented offsets; CRCs are real."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.commitlog import Entry, EntryKind, EntryTooLargeError
from dledger.commitlog.codec import (
    CHAIN_FIELDS,
    DATA_MAGIC,
    HEADER_SIZE,
    INDEX_MAGIC,
    INDEX_SIZE,
    _encode_fitting,
    _encode_loop,
    decode_run,
    encode_batch,
)
from dledger.commitlog.errors import CorruptEntryError


def encode(entries: list[Entry], *, next_index: int = 1, room: int = 1 << 20) -> bytes:
    batch = encode_batch(
        entries, next_index=next_index, prev_term=0, prev_chain=0, pos=1000, room=room,
        segment_bytes=1 << 20, max_entry_bytes=4096,
    )  # fmt: skip
    return bytes(batch.data)


def test_header_fields_are_at_the_documented_offsets() -> None:
    raw = encode([Entry(1, 7, b"hello", EntryKind.CONFIG)])
    assert len(raw) == HEADER_SIZE + 5 == 53
    le = struct.unpack_from
    assert le("<I", raw, 0)[0] == DATA_MAGIC
    assert le("<I", raw, 4)[0] == 53  # size
    assert le("<Q", raw, 8)[0] == 1  # index
    assert le("<Q", raw, 16)[0] == 7  # term
    assert le("<Q", raw, 24)[0] == 1000  # pos
    assert le("<I", raw, 32)[0] == int(EntryKind.CONFIG)  # channel carries the kind
    assert le("<I", raw, 40)[0] == zlib.crc32(b"hello")  # body CRC
    assert le("<I", raw, 44)[0] == 5  # body length
    fields = CHAIN_FIELDS.pack(DATA_MAGIC, 53, 1, 7, 1000, 2, zlib.crc32(b"hello"), 5)
    assert le("<I", raw, 36)[0] == zlib.crc32(fields, 0)  # chain CRC seeded with 0 before index 1
    assert raw[48:] == b"hello"


def test_chain_crc_links_each_entry_to_the_previous_one() -> None:
    raw = encode([Entry(1, 1, b"a"), Entry(2, 1, b"bb")])
    first_chain = struct.unpack_from("<I", raw, 36)[0]
    second = raw[49:]
    fields = CHAIN_FIELDS.pack(DATA_MAGIC, 50, 2, 1, 1049, 0, zlib.crc32(b"bb"), 2)
    assert struct.unpack_from("<I", second, 36)[0] == zlib.crc32(fields, first_chain)


def test_index_record_layout() -> None:
    batch = encode_batch(
        [Entry(5, 3, b"xyz")], next_index=5, prev_term=0, prev_chain=0, pos=64, room=100,
        segment_bytes=1000, max_entry_bytes=1000,
    )  # fmt: skip
    assert len(batch.index) == INDEX_SIZE == 32
    assert struct.unpack("<IQIQQ", batch.index) == (INDEX_MAGIC, 64, 51, 5, 3)


def test_splits_mark_entries_that_open_a_new_segment() -> None:
    batch = encode_batch(
        [Entry(i, 1, bytes(52)) for i in range(1, 6)], next_index=1, prev_term=0, prev_chain=0, pos=0,
        room=150, segment_bytes=250, max_entry_bytes=1000,
    )  # fmt: skip
    # 100-byte entries: 1 fits the 150 left, 2 opens a segment of 250 (2, 3 fit), 4 opens the next
    assert [(k, off) for k, off, _c in batch.splits] == [(1, 100), (3, 300)]


@pytest.mark.parametrize(("size", "limit"), [(4096 - HEADER_SIZE + 1, "max"), (600, "segment")])
def test_too_large_entries_are_refused(size: int, limit: str) -> None:
    with pytest.raises(EntryTooLargeError, match="limit"):
        encode_batch(
            [Entry(1, 1, bytes(size))], next_index=1, prev_term=0, prev_chain=0, pos=0, room=0,
            segment_bytes=4096 if limit == "max" else 512, max_entry_bytes=4096,
        )  # fmt: skip


def test_decode_round_trip_and_every_flipped_bit_is_caught() -> None:
    ents = [Entry(1, 1, b"one"), Entry(2, 2, b"", EntryKind.NOOP), Entry(3, 2, b"three")]
    raw = encode(ents)
    kw = {
        "first_index": 1,
        "count": 3,
        "first_pos": 1000,
        "prev_term": 0,
        "prev_chain": 0,
        "segment": "seg",
        "file_offset": 0,
    }
    assert decode_run(raw, **kw) == ents  # type: ignore[arg-type]
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptEntryError) as info:
            decode_run(bytes(bad), **kw)  # type: ignore[arg-type]
        assert info.value.segment == "seg"
        assert info.value.position in (0, 51, 99)


_entry = st.builds(
    Entry,
    index=st.integers(0, 12),
    term=st.integers(0, 4),
    data=st.binary(max_size=90),
    kind=st.sampled_from(list(EntryKind)),
)


@settings(max_examples=400, deadline=None)
@given(
    batch=st.lists(_entry, max_size=8),
    sequential=st.booleans(),
    prev_term=st.integers(0, 3),
    prev_chain=st.integers(0, (1 << 32) - 1),
    room=st.integers(0, 600),
    max_entry=st.integers(HEADER_SIZE, 200),
)
def test_the_vectorized_encoder_matches_the_loop_or_defers_to_it(
    batch: list[Entry], sequential: bool, prev_term: int, prev_chain: int, room: int, max_entry: int
) -> None:
    """The C-level fast path gives byte-identical batches, and leaves every batch it cannot encode exactly
    (invalid, or opening a segment) to the loop, which raises or splits."""
    if sequential:  # mostly-valid batches: consecutive indexes from 5, terms sorted
        terms = sorted(e.term for e in batch)
        batch = [Entry(5 + k, t, e.data, e.kind) for k, (e, t) in enumerate(zip(batch, terms, strict=True))]
    kw = {"next_index": 5, "prev_term": prev_term, "prev_chain": prev_chain, "pos": 4096, "room": room}
    fast = _encode_fitting(batch, **kw, limit=min(max_entry, 300))  # type: ignore[arg-type]
    try:
        slow = _encode_loop(batch, **kw, segment_bytes=300, max_entry_bytes=max_entry)  # type: ignore[arg-type]
    except ValueError:
        assert fast is None
        return
    if fast is None:
        assert not batch or slow.splits
    else:
        assert fast == slow and bytes(fast.data) == bytes(slow.data)
    assert encode_batch(batch, **kw, segment_bytes=300, max_entry_bytes=max_entry) == slow  # type: ignore[arg-type]
