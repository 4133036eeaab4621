"""`HardStateStore` (LMDB): round trip, durability across reopen, validation, room for more keys, the membership
config and the version 1 records written before it."""

from __future__ import annotations

import pathlib
import struct

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.commitlog import CorruptStoreError, HardState, HardStateCorruptError, HardStateStore
from dledger.commitlog.hardstate import HARD_STATE_KEY, MAX_CONFIG_BYTES, _decode, _encode
from dledger.storage_api import HardStateStore as HardStateStoreProtocol


def test_fresh_store_loads_the_zero_state(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path / "hs") as store:
        assert store.load() == HardState(0, None, 0)
        assert isinstance(store, HardStateStoreProtocol)


@pytest.mark.parametrize(
    "state",
    [
        HardState(1, "n1", 0),
        HardState(7, None, 5),
        HardState(2**64 - 1, "ü-node:9000", 2**63),
        HardState(3, "x", 3),
        HardState(4, "n2", 9, b"\x00members\xff"),
        HardState(5, None, 9, b"c" * MAX_CONFIG_BYTES),
    ],
)
def test_save_load_round_trip_survives_reopen(tmp_path: pathlib.Path, state: HardState) -> None:
    with HardStateStore.open(tmp_path) as store:
        store.save(HardState(99, "old", 1))
        store.save(state)
        assert store.load() == state
    with HardStateStore.open(tmp_path) as store:
        assert store.load() == state


@pytest.mark.parametrize(
    "state",
    [
        HardState(-1, None, 0),
        HardState(1, None, -3),
        HardState(2**64, None, 0),
        HardState(1, "", 0),
        HardState(1, 5, 0),  # type: ignore[arg-type]
        HardState(True, None, 0),
        HardState(1.0, None, 0),  # type: ignore[arg-type]
        HardState(1, "v" * 2000, 0),
        HardState(1, None, 0, b"c" * (MAX_CONFIG_BYTES + 1)),
        HardState(1, None, 0, bytearray(b"c")),  # type: ignore[arg-type]
        HardState(1, None, 0, "c"),  # type: ignore[arg-type]
    ],
)
def test_bad_values_are_refused_and_nothing_is_written(tmp_path: pathlib.Path, state: HardState) -> None:
    with HardStateStore.open(tmp_path) as store:
        store.save(HardState(4, "a", 2))
        with pytest.raises(ValueError):
            store.save(state)
        assert store.load() == HardState(4, "a", 2)


def test_save_refuses_other_types(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path) as store, pytest.raises(TypeError):
        store.save((1, None, 0))  # type: ignore[arg-type]


def test_other_keys_live_beside_the_hard_state(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path) as store:
        store.save(HardState(3, "b", 1))
    env = lmdb.open(str(tmp_path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"raft/membership", b"later issue")
    env.close()
    with HardStateStore.open(tmp_path) as store:
        assert store.load() == HardState(3, "b", 1)
        store.save(HardState(4, None, 2))
    env = lmdb.open(str(tmp_path), max_dbs=8)
    with env.begin() as txn:
        assert txn.get(b"raft/membership") == b"later issue"
    env.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x03" + bytes(22),
        b"\x02" + bytes(18),
        b"\x01" + bytes(16) + b"\x05\x00ab",
        b"\x01" + bytes(16),
        b"\x01" + bytes(16) + b"\x00\x00",  # an empty vote
        b"\x02" + bytes(16) + b"\xff\xff\x03\x00\x00\x00ab",  # config shorter than its length
        b"\x02" + bytes(16) + b"\xff\xff\x01\x00\x00\x00abc",  # trailing bytes
        b"\x02" + bytes(16) + b"\xff\xff\xff\xff\xff\xff",  # config over the limit
        b"\x02" + bytes(16) + b"\x02\x00\x00\x00\x00\x00\xff\xfe",  # vote not UTF-8
    ],
)
def test_a_damaged_record_is_reported_not_guessed(tmp_path: pathlib.Path, raw: bytes) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(HARD_STATE_KEY, raw)
    env.close()
    with HardStateStore.open(tmp_path) as store, pytest.raises(CorruptStoreError):
        store.load()


def test_the_environment_is_durable(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path) as store:
        flags = store._env.flags()
    assert flags["sync"] and flags["metasync"]


def test_config_changes_atomically_with_the_rest(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path) as store:
        store.save(HardState(2, "a", 1, b"old"))
        with pytest.raises(ValueError):
            store.save(HardState(3, "b", 2, b"x" * (MAX_CONFIG_BYTES + 1)))
        assert store.load() == HardState(2, "a", 1, b"old")
        store.save(HardState(3, "b", 2, b""))
    with HardStateStore.open(tmp_path) as store:
        assert store.load() == HardState(3, "b", 2, b"")


@pytest.mark.parametrize("vote", [None, "n1", "ü"])
def test_a_version_1_record_loads_with_an_empty_config_and_is_upgraded_on_save(
    tmp_path: pathlib.Path, vote: str | None
) -> None:
    """Stores written before the membership field: version 1 records, byte for byte as the old code wrote them."""
    raw_vote = b"" if vote is None else vote.encode()
    v1 = struct.pack("<BQQH", 1, 7, 5, 0xFFFF if vote is None else len(raw_vote)) + raw_vote
    env = lmdb.open(str(tmp_path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(HARD_STATE_KEY, v1)
    env.close()
    with HardStateStore.open(tmp_path) as store:
        assert store.load() == HardState(7, vote, 5, b"")
        store.save(HardState(8, vote, 6, b"cfg"))
    with HardStateStore.open(tmp_path) as store:
        assert store.load() == HardState(8, vote, 6, b"cfg")
    env = lmdb.open(str(tmp_path), max_dbs=8)
    with env.begin() as txn:
        stored = txn.get(HARD_STATE_KEY)
    assert stored is not None and bytes(stored)[0] == 3
    env.close()


def _put_raw(path: pathlib.Path, raw: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(HARD_STATE_KEY, raw)
    env.close()


def _get_raw(path: pathlib.Path) -> bytes:
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin() as txn:
        raw = txn.get(HARD_STATE_KEY)
    env.close()
    assert raw is not None
    return bytes(raw)


def test_a_version_2_record_without_a_crc_still_loads(tmp_path: pathlib.Path) -> None:
    """Stores written before the CRC: version 2 records, byte for byte as the old code wrote them."""
    v2 = struct.pack("<BQQHI", 2, 9, 4, 2, 3) + b"n2" + b"cfg"
    _put_raw(tmp_path, v2)
    with HardStateStore.open(tmp_path) as store:
        assert store.exists()
        assert store.load() == HardState(9, "n2", 4, b"cfg")


def test_every_flipped_bit_of_a_record_is_refused(tmp_path: pathlib.Path) -> None:
    """A term 2 that reads back as 1, a vote for n0 that reads as n1: no flip loads as another state."""
    with HardStateStore.open(tmp_path) as store:
        store.save(HardState(2, "n0", 817, b"conf"))
    good = _get_raw(tmp_path)
    for bit in range(len(good) * 8):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        _put_raw(tmp_path, bytes(bad))
        with HardStateStore.open(tmp_path) as store, pytest.raises(HardStateCorruptError):
            store.load()


def test_exists_tells_a_missing_record_from_the_zero_state(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path) as store:
        assert not store.exists() and store.load() == HardState()
        store.save(HardState())
        assert store.exists() and store.load() == HardState()


@settings(max_examples=60, deadline=None)
@given(
    term=st.integers(0, 2**64 - 1),
    vote=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    commit=st.integers(0, 2**64 - 1),
    config=st.binary(max_size=300),
)
def test_any_valid_state_round_trips(term: int, vote: str | None, commit: int, config: bytes) -> None:
    state = HardState(term, vote, commit, config)
    assert _decode(_encode(state), "test") == state
