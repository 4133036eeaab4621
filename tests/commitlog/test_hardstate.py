"""`HardStateStore` (LMDB): round trip, durability across reopen, validation, room for more keys."""

from __future__ import annotations

import pathlib

import lmdb
import pytest

from dledger.commitlog import CorruptStoreError, HardState, HardStateStore
from dledger.commitlog.hardstate import HARD_STATE_KEY
from dledger.storage_api import HardStateStore as HardStateStoreProtocol


def test_fresh_store_loads_the_zero_state(tmp_path: pathlib.Path) -> None:
    with HardStateStore.open(tmp_path / "hs") as store:
        assert store.load() == HardState(0, None, 0)
        assert isinstance(store, HardStateStoreProtocol)


@pytest.mark.parametrize(
    "state",
    [HardState(1, "n1", 0), HardState(7, None, 5), HardState(2**64 - 1, "ü-node:9000", 2**63), HardState(3, "x", 3)],
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


@pytest.mark.parametrize("raw", [b"", b"\x02" + bytes(18), b"\x01" + bytes(16) + b"\x05\x00ab", b"\x01" + bytes(16)])
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
