"""Real node processes (sync flush, three of them) under load: one replica's storage is damaged WHILE it runs,
and the read or write that meets the damage makes it repair in place, without a restart: it stops leading
or voting, reopens its log (bad index records rebuilt from the data, damaged entries cut), takes the lost
range again from the leader while recovering (never campaigning), and votes again once it has it back.
The group keeps serving; afterwards every acknowledged entry is checked, with its data, in every store.

Faults: a bit flipped in a closed segment of the leader, met by a follower's catch-up read; a bit flipped
in a closed segment of a follower, met by a `get` there; an index record flipped, met by a `get`; the
active segment of a follower cut, met by its next append; then two replicas damaged in turn."""

from __future__ import annotations

import pathlib

import pytest

from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError
from dledger.commitlog import SegmentedLog
from dledger.commitlog.codec import INDEX, INDEX_SIZE
from dledger.commitlog.verify import verify_store
from tests.node.procs import ProcessGroup
from tests.node.test_recovery_faults import Load, segment_files
from tests.node.test_recovery_faults import group as group  # the sync-flush group fixture (re-exported for pytest)
from tests.support import wait_for

pytestmark = pytest.mark.process  # starts processes

BEFORE = 900  # acknowledged entries before the damage: six segments or so
FOUND = "found damaged storage while running"
RECENT_CACHED = 2 * 8192 + 1000  # more entries than a leader keeps in memory (dledger.raft.log's cache)


def flip_in_place(path: pathlib.Path, at: int, mask: int = 0x20) -> None:
    """Flip bits of one byte where it is (the running node's files are never rewritten whole)."""
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ mask]))


def flip_entry(store: pathlib.Path, index: int) -> None:
    """Flip a bit in the middle of entry `index`, which must lie in a closed segment."""
    data_files = segment_files(store, "data")
    for k, data_file in enumerate(data_files):
        raw = (store / "log" / "index" / data_file.name).read_bytes()
        first = INDEX.unpack_from(raw, 0)[3]
        if first <= index < first + len(raw) // INDEX_SIZE:
            assert k < len(data_files) - 1, f"entry {index} is in the active segment"
            _magic, pos, size, found, _term = INDEX.unpack_from(raw, (index - first) * INDEX_SIZE)
            assert found == index
            flip_in_place(data_file, pos - int(data_file.name) + size // 2)
            return
    raise AssertionError(f"no segment of {store} holds entry {index}")


def flip_index_record(store: pathlib.Path) -> int:
    """Flip the position of the sixth index record of closed segment 1; returns that entry's index."""
    files = segment_files(store, "index")
    assert len(files) >= 3
    record = 5 * INDEX_SIZE
    index = int(INDEX.unpack_from(files[1].read_bytes(), record)[3])
    flip_in_place(files[1], record + 9, 0x01)
    return index


def cut_active_segment(store: pathlib.Path) -> None:
    last = segment_files(store, "data")[-1]
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 3)


def get_from(group: ProcessGroup, node_id: str, index: int) -> bytes | None:
    """`get(index)` sent to one node only; None when it did not answer with the entry."""
    with DLedgerClient({node_id: group.peers[node_id]}, group=group.group, timeout=3, rpc_timeout=2) as client:
        try:
            return client.get(index).data
        except DLedgerError:
            return None


def wait_healed(group: ProcessGroup, node_id: str, pid: int, *, recovers: bool, target: int) -> None:
    """`node_id` found the damage, repaired it in the same process, and is an up-to-date voter again."""
    wait_for(lambda: FOUND in group.log_text(node_id), 60, f"{node_id} found the damage")
    if recovers:
        wait_for(
            lambda: (t := group.log_text(node_id)).count("starts RECOVERING") == t.count("RECOVERED") >= 1,
            120,
            f"{node_id} recovered the lost range",
        )
    else:
        wait_for(lambda: "nothing it had persisted was lost" in group.log_text(node_id), 60, f"{node_id} repaired")
    wait_for(
        lambda: (s := group.statuses()[node_id]).role in ("follower", "leader") and s.last_index >= target,
        120,
        f"{node_id} a voter again and caught up",
    )
    assert group.procs[node_id].pid == pid, f"{node_id} was restarted"
    assert group.alive(node_id)
    text = group.log_text(node_id)
    assert "Traceback" not in text and "fenced" not in text
    if recovers:  # while recovering it never campaigned
        recovering = text[text.index("starts RECOVERING") : text.rindex("RECOVERED")]
        assert f"node {node_id} is candidate" not in recovering
        assert f"node {node_id} is pre_candidate" not in recovering


def check_stores(group: ProcessGroup, load: Load) -> None:
    acked = load.stop()
    target = max(acked)
    ids = sorted(group.peers)
    wait_for(lambda: all(group.statuses()[i].applied_index >= target for i in ids), 120, "every replica applied")
    group.stop_all()
    for node_id in ids:
        store = group.root / node_id
        assert verify_store(str(store / "log")).clean
        with SegmentedLog.open(store / "log") as log:
            assert log.last_index >= target
            for lo in range(min(acked), target + 1, 512):
                for e in log.read(lo, min(lo + 512, target + 1)):
                    if e.index in acked:
                        assert e.data == acked[e.index], f"{node_id}: entry {e.index} differs from its ack"


def serving(group: ProcessGroup, load: Load, more: int = 200) -> None:
    want = load.count() + more
    wait_for(lambda: load.count() >= want, 120, "the group serving after the damage")


def started(group: ProcessGroup) -> Load:
    group.start_all()
    group.wait_for_leader(60)
    load = Load(group)
    load.start()
    return load


def damage_follower_then_get(group: ProcessGroup, load: Load, victim: str, *, index_record: bool) -> None:
    wait_for(lambda: load.count() >= BEFORE, 120, f"{BEFORE} acknowledged entries")
    pid = group.procs[victim].pid
    store = group.root / victim
    index = 300  # in a closed segment (about 145 entries fill one)
    if index_record:
        index = flip_index_record(store)
    else:
        flip_entry(store, index)
    with load.lock:
        expected = load.acked.get(index)
    get_from(group, victim, index)  # meets the damage: answered by the leader's redirect or not at all
    wait_healed(group, victim, pid, recovers=not index_record, target=load.last())
    data = wait_for(lambda: get_from(group, victim, index), 60, f"{victim} serves entry {index} again")
    assert expected is None or data == expected
    if index_record:
        assert "index rebuilt from data" in group.log_text(victim)
    serving(group, load)


def test_a_flipped_entry_met_by_a_get_on_a_follower_is_repaired_in_place(group: ProcessGroup) -> None:
    load = started(group)
    try:
        leader = group.wait_for_leader(60)
        victim = next(i for i in sorted(group.peers) if i != leader)
        damage_follower_then_get(group, load, victim, index_record=False)
    finally:
        check_stores(group, load)


def test_a_flipped_index_record_met_by_a_get_is_rebuilt_from_the_data(group: ProcessGroup) -> None:
    load = started(group)
    try:
        leader = group.wait_for_leader(60)
        victim = next(i for i in sorted(group.peers) if i != leader)
        damage_follower_then_get(group, load, victim, index_record=True)
    finally:
        check_stores(group, load)


def test_a_flipped_entry_met_by_a_catch_up_read_on_the_leader_is_repaired_in_place(group: ProcessGroup) -> None:
    """The leader's own closed segment is damaged; a follower that was down needs those entries: the leader's
    read for it meets the damage, the leader steps down, another leader is elected, and it heals."""
    load = started(group)
    try:
        leader = group.wait_for_leader(60)
        lagging = next(i for i in sorted(group.peers) if i != leader)
        wait_for(lambda: load.count() >= 100, 120, "100 acknowledged entries")
        group.kill(lagging)
        behind = load.last() + 1000  # the lagging follower's log ends before it
        # past the leader's cache of recent entries: the catch-up reads the damaged entry from the disk
        wait_for(lambda: load.last() >= behind + RECENT_CACHED, 300, "entries past the leader's cache")
        assert group.leader() == leader, "the leader changed before the damage: no catch-up read would meet it"
        pid = group.procs[leader].pid
        flip_entry(group.root / leader, behind)
        group.start(lagging)
        wait_healed(group, leader, pid, recovers=True, target=load.last())
        serving(group, load)
    finally:
        check_stores(group, load)


def test_an_active_segment_cut_under_a_follower_is_repaired_in_place(group: ProcessGroup) -> None:
    load = started(group)
    try:
        leader = group.wait_for_leader(60)
        victim = next(i for i in sorted(group.peers) if i != leader)
        wait_for(lambda: load.count() >= BEFORE, 120, f"{BEFORE} acknowledged entries")
        pid = group.procs[victim].pid
        cut_active_segment(group.root / victim)  # under load: the cut may race an append in flight
        wait_healed(group, victim, pid, recovers=True, target=load.last())
        serving(group, load)
    finally:
        check_stores(group, load)


def test_two_replicas_damaged_in_turn_while_running_lose_nothing(group: ProcessGroup) -> None:
    """One heals before the next is damaged: a flipped entry met by a `get` on one follower, then the
    other follower's active segment cut."""
    load = started(group)
    try:
        leader = group.wait_for_leader(60)
        first, second = (i for i in sorted(group.peers) if i != leader)
        damage_follower_then_get(group, load, first, index_record=False)
        pid = group.procs[second].pid
        cut_active_segment(group.root / second)
        wait_healed(group, second, pid, recovers=True, target=load.last())
        serving(group, load)
    finally:
        check_stores(group, load)
