"""A node refuses, with one clear line, to start on a store whose hard state it cannot trust: a record that
fails its CRC, or a missing record beside a log (starting at term 0 with no vote could vote twice in a term).
Through `dledger node` too: the line, no traceback."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import lmdb
import pytest

from dledger.commitlog import HardStateStore, RecoveryRefusedError, SegmentedLog
from dledger.commitlog.hardstate import HARD_STATE_KEY
from dledger.node.config import NodeConfig
from dledger.node.node import RaftNode
from dledger.storage_api import Entry, HardState
from tests.node.cluster_util import peers_for

pytestmark = pytest.mark.process


def _store_with_entries(store: pathlib.Path, n: int = 5) -> None:
    with SegmentedLog.open(store / "log") as log:
        log.append([Entry(i, 2, b"x%d" % i) for i in range(1, n + 1)])
    with HardStateStore.open(store / "state") as hs:
        hs.save(HardState(2, "n0", n, b""))


def _flip_hard_state(store: pathlib.Path) -> None:
    env = lmdb.open(str(store / "state"), max_dbs=8)
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(HARD_STATE_KEY))
        raw[1] ^= 0x03  # the term's low byte: 2 -> 1
        txn.put(HARD_STATE_KEY, bytes(raw))
    env.close()


def _remove_hard_state(store: pathlib.Path) -> None:
    env = lmdb.open(str(store / "state"), max_dbs=8)
    with env.begin(write=True) as txn:
        assert txn.delete(HARD_STATE_KEY)
    env.close()


def _open(store: pathlib.Path) -> RaftNode:
    node = RaftNode(NodeConfig(self_id="n0", peers=peers_for(["n0", "n1", "n2"]), store_dir=store))
    node.open_storage()
    return node


@pytest.mark.parametrize(
    ("damage", "what"), [(_flip_hard_state, "fails its CRC"), (_remove_hard_state, "no hard state")]
)
def test_a_damaged_or_missing_hard_state_refuses_to_start(tmp_path: pathlib.Path, damage, what: str) -> None:
    store = tmp_path / "n0"
    _store_with_entries(store)
    damage(store)
    with pytest.raises(RecoveryRefusedError) as info:
        _open(store)
    message = str(info.value)
    assert what in message and str(store / "state") in message and "--join" in message
    assert "\n" not in message


def test_a_new_store_gets_its_record_at_once(tmp_path: pathlib.Path) -> None:
    """So that a crash between the first append and the first hard state write is not mistaken for damage."""
    store = tmp_path / "n0"
    node = _open(store)
    node._close_storage()
    with HardStateStore.open(store / "state") as hs:
        assert hs.exists()


def test_dledger_node_prints_one_line_not_a_traceback(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "n0"
    _store_with_entries(store)
    _flip_hard_state(store)
    peers = ";".join(f"{k}-{v}" for k, v in peers_for(["n0", "n1", "n2"]).items())
    proc = subprocess.run(
        [sys.executable, "-m", "dledger", "node", "--id", "n0", "--peers", peers, "--store-dir", str(store)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dledger node:")]
    assert len(lines) == 1 and "fails its CRC" in lines[0], proc.stderr
