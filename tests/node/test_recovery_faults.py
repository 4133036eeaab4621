"""Real node processes (sync flush, three of them) under load: one replica's storage is damaged while it is
down, not crashed, and it restarts. Each damaged replica either heals (starts recovering: it takes the lost
range from the leader and votes again only once it has it) or refuses to start with one clear line; the
group keeps serving throughout; afterwards every acknowledged entry is checked, with its data, in the store
of every replica that runs.

Faults: the active segment deleted, the tail cut below the commit index, a bit flipped in fsynced entries
of the active segment, a bit flipped in a closed segment, an index record flipped (rebuilt from the data),
and the hard-state record flipped or removed (refused); then two replicas damaged in turn."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable, Iterator

import lmdb
import pytest

from dledger.client.client_policy import DLedgerError
from dledger.commitlog import SegmentedLog
from dledger.commitlog.hardstate import HARD_STATE_KEY
from dledger.commitlog.verify import verify_store
from tests.node.procs import ProcessGroup
from tests.support import wait_for

pytestmark = pytest.mark.process

SEGMENT_BYTES = 65536
ENTRY = 400  # payload bytes: about 145 entries per segment
BEFORE = 900  # acknowledged entries before the damage: six segments or so


class Load(threading.Thread):
    """Appends batches of 8 until stopped, recording every acknowledged entry by index."""

    def __init__(self, group: ProcessGroup) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.acked: dict[int, bytes] = {}
        self.failures = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        k = 0
        with self.group.client(timeout=10) as client:
            while not self.halt.is_set():
                batch = [f"{k + j:08d}".encode().ljust(ENTRY, b".") for j in range(8)]
                k += 8
                try:
                    results = client.append_batch(batch)
                except DLedgerError:
                    self.failures += 1  # refused or unknown: only acknowledged entries must survive
                    continue
                with self.lock:
                    for result, data in zip(results, batch, strict=True):
                        self.acked[result.index] = data

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def last(self) -> int:
        with self.lock:
            return max(self.acked, default=0)

    def stop(self) -> dict[int, bytes]:
        self.halt.set()
        self.join(60)
        assert not self.is_alive()
        return dict(self.acked)


@pytest.fixture
def group(tmp_path: pathlib.Path) -> Iterator[ProcessGroup]:
    conf = tmp_path / "broker.conf"
    conf.write_text(f"mappedFileSizeCommitLog={SEGMENT_BYTES}\n")
    g = ProcessGroup(tmp_path, flush="sync")
    g.extra_args = ("--config", str(conf))
    yield g
    g.stop_all()


def segment_files(store: pathlib.Path, sub: str) -> list[pathlib.Path]:
    return sorted((store / "log" / sub).iterdir())


def _flip(path: pathlib.Path, at: int, mask: int = 0x20) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= mask
    path.write_bytes(bytes(raw))


def delete_active_segment(store: pathlib.Path) -> None:
    segment_files(store, "data")[-1].unlink()
    segment_files(store, "index")[-1].unlink()


def truncate_tail(store: pathlib.Path) -> None:
    last = segment_files(store, "data")[-1]
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 3)


def flip_active(store: pathlib.Path) -> None:
    last = segment_files(store, "data")[-1]
    _flip(last, last.stat().st_size // 2)


def flip_closed(store: pathlib.Path) -> None:
    files = segment_files(store, "data")
    assert len(files) >= 3
    _flip(files[1], files[1].stat().st_size // 2)


def flip_index(store: pathlib.Path) -> None:
    files = segment_files(store, "index")
    assert len(files) >= 3
    _flip(files[1], 32 * 5 + 9, 0x01)  # the position of the sixth record of a closed segment


def _edit_hard_state(store: pathlib.Path, edit: Callable[[lmdb.Transaction], None]) -> None:
    env = lmdb.open(str(store / "state"), max_dbs=8)
    with env.begin(write=True) as txn:
        edit(txn)
    env.close()


def flip_hard_state(store: pathlib.Path) -> None:
    def edit(txn: lmdb.Transaction) -> None:
        raw = bytearray(txn.get(HARD_STATE_KEY))
        raw[1] ^= 0x01  # the term's low byte
        txn.put(HARD_STATE_KEY, bytes(raw))

    _edit_hard_state(store, edit)


def remove_hard_state(store: pathlib.Path) -> None:
    _edit_hard_state(store, lambda txn: txn.delete(HARD_STATE_KEY))


def _check_store(store: pathlib.Path, acked: dict[int, bytes]) -> None:
    assert verify_store(str(store / "log")).clean
    with SegmentedLog.open(store / "log") as log:
        assert log.last_index >= max(acked)
        for lo in range(min(acked), max(acked) + 1, 512):
            for e in log.read(lo, min(lo + 512, max(acked) + 1)):
                if e.index in acked:
                    assert e.data == acked[e.index], f"{store.name}: entry {e.index} differs from what was acknowledged"


def _damage_one(
    group: ProcessGroup, load: Load, victim: str, damage: Callable[[pathlib.Path], None], heals: bool, recovers: bool
) -> None:
    wait_for(lambda: load.count() >= BEFORE, 120, f"{BEFORE} acknowledged entries")
    group.kill(victim)
    acked_before = load.last()
    damage(group.root / victim)
    group.start(victim)
    if heals:
        wait_for(
            lambda: (s := group.statuses()[victim]).role == "follower" and s.last_index >= acked_before,
            120,
            f"{victim} healed and caught up",
        )
        if damage is flip_index:
            assert "index rebuilt from data" in group.log_text(victim)
        if recovers:  # each recovering run ends (the line follows the status by a moment)
            wait_for(
                lambda: (t := group.log_text(victim)).count("starts RECOVERING") == t.count("RECOVERED") >= 1,
                30,
                f"{victim} logged RECOVERED",
            )
    else:
        wait_for(lambda: not group.alive(victim), 60, f"{victim} refused to start")
        lines = [line for line in group.log_text(victim).splitlines() if line.startswith("dledger node:")]
        assert len(lines) == 1 and "refusing to start" in lines[0] and "--join" in lines[0], lines
        assert "Traceback" not in group.log_text(victim)
    more = load.count() + 200
    wait_for(lambda: load.count() >= more, 120, "the group serving after the damage")


def _run(group: ProcessGroup, damages: list[Callable[[pathlib.Path], None]], *, heals: bool, recovers: bool) -> None:
    """Each damage in turn to another follower (the previous one healed first); then check every store."""
    group.start_all()
    group.wait_for_leader(60)
    load = Load(group)
    load.start()
    done: set[str] = set()
    try:
        for damage in damages:
            leader = group.wait_for_leader(60)
            victim = next(i for i in sorted(group.peers) if i != leader and i not in done)
            done.add(victim)
            _damage_one(group, load, victim, damage, heals, recovers)
    finally:
        acked = load.stop()
    target = max(acked)
    running = [i for i in sorted(group.peers) if group.alive(i)]
    wait_for(lambda: all(group.statuses()[i].applied_index >= target for i in running), 120, "every replica applied")
    group.stop_all()
    for node_id in running:
        _check_store(group.root / node_id, acked)


@pytest.mark.parametrize(
    ("damage", "recovers"),
    [
        (delete_active_segment, True),
        (truncate_tail, True),
        (flip_active, True),
        (flip_closed, True),
        (flip_index, False),
    ],
)
def test_a_damaged_replica_heals_and_nothing_acknowledged_is_lost(
    group: ProcessGroup, damage: Callable[[pathlib.Path], None], recovers: bool
) -> None:
    _run(group, [damage], heals=True, recovers=recovers)


@pytest.mark.parametrize("damage", [flip_hard_state, remove_hard_state])
def test_a_replica_whose_hard_state_is_damaged_refuses_to_start(
    group: ProcessGroup, damage: Callable[[pathlib.Path], None]
) -> None:
    _run(group, [damage], heals=False, recovers=False)


def test_two_replicas_damaged_in_turn_lose_nothing(group: ProcessGroup) -> None:
    """One heals before the next is damaged: a bit flipped in one's fsynced tail, then another's active
    segment deleted."""
    _run(group, [flip_active, delete_active_segment], heals=True, recovers=True)
