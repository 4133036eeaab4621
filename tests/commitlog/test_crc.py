"""dledger.commitlog.crc: the fast body CRC is zlib's CRC-32, value for value."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.commitlog import codec, crc
from dledger.storage_api import Entry, EntryKind


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=70_000), st.integers(0, 2**32 - 1))
def test_body_crc_is_zlibs_crc32(data: bytes, seed: int) -> None:
    assert crc.body_crc(data) == zlib.crc32(data)
    assert crc.body_crc(data, seed) == zlib.crc32(data, seed)
    view = memoryview(data)[len(data) // 3 :]
    assert crc.body_crc(view, seed) == zlib.crc32(view, seed)


def test_isal_is_used_when_installed() -> None:
    expected = "isal" if importlib.util.find_spec("isal") is not None else "zlib"
    if os.environ.get("DLEDGER_CRC", "").strip().lower() == "zlib":
        expected = "zlib"
    assert expected == crc.IMPLEMENTATION


@pytest.mark.process
def test_dledger_crc_zlib_forces_zlib() -> None:
    code = "from dledger.commitlog import crc; import zlib; print(crc.IMPLEMENTATION, crc.body_crc is zlib.crc32)"
    env = {**os.environ, "DLEDGER_CRC": "zlib"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["zlib", "True"]


def test_large_entries_written_with_the_fast_crc_decode_with_zlibs() -> None:
    bodies = [bytes([i]) * (crc.FAST_FROM + 1000 * i) for i in range(1, 6)]
    entries = [Entry(i + 1, 1, b, EntryKind.NORMAL) for i, b in enumerate(bodies)]
    batch = codec.encode_batch(
        entries, next_index=1, prev_term=0, prev_chain=0, pos=0, room=1 << 20, segment_bytes=1 << 20,
        max_entry_bytes=1 << 20,
    )  # fmt: skip
    off = 0
    for b in bodies:
        fields = codec.HEADER.unpack_from(batch.data, off)
        assert fields[7] == zlib.crc32(b)  # the body CRC field
        off += fields[1]
    decoded = codec.decode_run(
        batch.data, first_index=1, count=5, first_pos=0, prev_term=0, prev_chain=0, segment="s", file_offset=0
    )
    assert decoded == entries
