"""`Cluster`: a deterministic in-memory harness that drives N `RaftCore`s over `MemoryLog` storage.

No sockets, clocks or threads: the test decides every tick, delivery, drop, duplicate, partition, crash
and restart. Randomness (the cores' election timeouts) comes from `random.Random` seeded by `seed`, so a
run replays exactly from its seed and its sequence of calls.

Persistence is modelled honestly, following the contract of `dledger.raft.ready`:
- `process(id)` takes a node's Ready and puts `ready.messages` on the network at once; the Ready is now
  pending;
- `persist(id)` writes the pending Ready's entries and hard state to the node's `MemoryLog` /
  `MemoryHardStateStore`, only then releases `ready.persisted_messages`, applies the committed entries to
  the node's (durable) state machine, records read states and calls `advance`;
- `crash(id)` throws away the core and the pending Ready: only what `persist` wrote survives, and
  `restart(id)` builds a new core from it (applied = what the state machine holds);
- `damage(id, keep)` is not a crash: a down node's durable log loses its entries after `keep`, which it
  had persisted (and so may have acknowledged); it restarts recovering (`Config.recovering_until`) until
  the leader has given them back. Its state machine keeps what it applied, so entries committed again are
  checked equal to those it applied before. `repair_in_place(id, keep)` is the same damage found by a
  running node: as the runtime does (`dledger.node.node_repair`), its core and pending Ready are
  dropped, its log loses the entries after `keep`, and a recovering core is built at once (no restart).
Messages between nodes may be delivered in any order, dropped or duplicated; links can be cut.

Membership and snapshots:
- `join(id)` starts a brand-new node (`Config(join=True)`, empty storage) that the group can then add with
  `change(leader, ConfChange(...))` (or `add_learner`, which does both); `wipe(id, term)` restarts a down
  node the same way under its old id, at a term floor (a lost disk; its `generation` counts the losses);
- the state machine of a node is the list of entries it applied, so a snapshot is that list's prefix:
  `compact(id)` snapshots a node at its applied index (`SnapshotMeta.config` = the data of the last CONFIG
  entry applied, b"" if none), reports it with `set_snapshot` and compacts the log below it;
- an InstallSnapshot a leader sends stands for the whole streamed snapshot: on a cut link it is lost and the
  leader hears `report_snapshot(to, False)`, otherwise `report_snapshot(to, True)` and the message travels
  (and may still be dropped) like any other; a follower's Ready with a snapshot restores its state machine
  from the snapshot store before `persist_ready` resets its log.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dledger.raft import (
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Config,
    InstallSnapshot,
    Message,
    NotLeaderError,
    Proposed,
    RaftCore,
    ReadState,
    Ready,
    Role,
    persist_ready,
)
from dledger.storage_api import Entry, EntryKind, HardState, SnapshotMeta
from dledger.testing.memory_log import MemoryHardStateStore, MemoryLog

__all__ = ["Cluster", "SimNode"]


class _NotQuiet(AssertionError):
    pass


@dataclass
class SimNode:
    """One simulated replica: durable storage, durable state machine, and (while up) a core."""

    id: str
    config: Config
    log: MemoryLog = field(default_factory=MemoryLog)
    store: MemoryHardStateStore = field(default_factory=MemoryHardStateStore)
    applied: list[Entry] = field(default_factory=list)  # the state machine; durable in this model
    read_states: list[ReadState] = field(default_factory=list)
    core: RaftCore | None = None
    pending: Ready | None = None
    incarnation: int = 0
    generation: int = 0  # how many times its store was lost (`Cluster.wipe`)
    snapshot: SnapshotMeta | None = None  # the newest snapshot stored (taken or installed)
    # durable: entries up to here were persisted before `Cluster.damage` cut them (0: none lost); given
    # to the core as `Config.recovering_until` at each start, cleared once the core has them again
    recovering_until: int = 0
    recovering_term: int = 0  # the term of the entry at `recovering_until` before the damage

    @property
    def alive(self) -> bool:
        return self.core is not None

    def must_core(self) -> RaftCore:
        if self.core is None:
            raise RuntimeError(f"{self.id} is down")
        return self.core


class Cluster:
    """N replicas and the network between them. Node ids are "n0", "n1", ... unless `ids` is given.

    Every node starts from `entries` (or `logs[id]`) and `hard_states[id]`; `config` goes to every Config.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        ids: Sequence[str] | None = None,
        entries: Sequence[Entry] = (),
        logs: Mapping[str, Sequence[Entry]] | None = None,
        hard_states: Mapping[str, HardState] | None = None,
        **config: Any,
    ) -> None:
        self.seed = seed
        self.ids = list(ids) if ids is not None else [f"n{i}" for i in range(n)]
        self.initial_ids = tuple(self.ids)
        self._config = dict(config)
        self.snapshots: dict[tuple[int, int], tuple[Entry, ...]] = {}  # (index, term) -> state machine
        self.on_restore: Callable[[str, Sequence[Entry]], None] | None = None
        self.network: list[Message] = []
        self.cut: set[tuple[str, str]] = set()  # (from, to) links that lose every message
        self.stats: Counter[str] = Counter()
        self.on_apply: Callable[[str, Entry], None] | None = None
        self.on_read: Callable[[str, ReadState], None] | None = None
        self.on_persist: Callable[[str, Ready], None] | None = None
        self.nodes: dict[str, SimNode] = {}
        for i in self.ids:
            cfg = Config(id=i, peers=tuple(self.ids), **config)
            log = MemoryLog(logs[i] if logs is not None and i in logs else entries)
            store = MemoryHardStateStore(hard_states.get(i) if hard_states is not None else None)
            self.nodes[i] = SimNode(i, cfg, log=log, store=store)
            self.start(i)

    def __repr__(self) -> str:
        return f"Cluster(seed={self.seed}, in_flight={len(self.network)}, cut={sorted(self.cut)})"

    def describe(self) -> str:
        """A readable dump of every node and the network: print it when a test fails."""
        lines = [repr(self)]
        for node in self.nodes.values():
            state = repr(node.core) if node.core else "DOWN"
            lines.append(f"  {node.id}: {state} applied={len(node.applied)} pending={node.pending is not None}")
        lines += [f"  msg: {m!r}" for m in self.network[:50]]
        return "\n".join(lines)

    # ---- nodes ----

    def core(self, node_id: str) -> RaftCore:
        return self.nodes[node_id].must_core()

    def alive(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n.alive]

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.incarnation += 1
        cfg = replace(
            node.config,
            applied=len(node.applied),
            recovering_until=node.recovering_until,
            recovering_term=node.recovering_term,
        )
        rng = random.Random(f"{self.seed}/{node_id}/{node.incarnation}")
        snap = node.snapshot
        if snap is not None and snap.index > node.log.last_index:  # a damaged log: continue after the snapshot
            node.log.reset(snap.index, snap.term)  # (as the runtime does at start)
        node.core = RaftCore(cfg, node.log, node.store.load(), rng)
        if node.snapshot is not None:
            node.core.set_snapshot(node.snapshot)
        node.pending = None

    def join(self, node_id: str) -> None:
        """Start a brand-new node, knowing only the group's initial voters (it is no member yet)."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} already exists")
        cfg = Config(id=node_id, peers=self.initial_ids, join=True, **self._config)
        self.nodes[node_id] = SimNode(node_id, cfg)
        self.ids.append(node_id)
        self.start(node_id)

    def wipe(self, node_id: str, term: int) -> None:
        """A down node's disk is lost: it starts again under its old id as a joining node with an empty
        log (`Config(join=True)`, peers = the initial voters but itself) and a hard state holding only
        `term`, the term floor the runtime learns from the group before it starts a joining node (see
        `dledger.node.join_term`). Its state machine is lost too. Safe only once its removal is
        committed and `term` is at least the term in which that happened; the caller's test decides."""
        old = self.nodes[node_id]
        if old.alive:
            raise ValueError(f"{node_id} is running: stop it before its store is wiped")
        peers = tuple(i for i in self.initial_ids if i != node_id)
        cfg = Config(id=node_id, peers=peers, join=True, **self._config)
        store = MemoryHardStateStore(HardState(current_term=term))
        self.nodes[node_id] = SimNode(
            node_id, cfg, store=store, incarnation=old.incarnation, generation=old.generation + 1
        )
        self.stats["wipes"] += 1
        self.start(node_id)

    def change(self, leader_id: str, change: ConfChange) -> Proposed:
        """Propose a membership change at `leader_id` (raises as `propose_conf_change` does)."""
        return self.core(leader_id).propose_conf_change(change)

    def add_learner(self, leader_id: str, node_id: str) -> Proposed:
        if node_id not in self.nodes:
            self.join(node_id)
        return self.change(leader_id, ConfChange(ConfChangeOp.ADD_LEARNER, node_id))

    def compact(self, node_id: str, keep: int = 0) -> SnapshotMeta | None:
        """Snapshot `node_id`'s state machine at its applied index minus `keep`, and compact its log."""
        node = self.nodes[node_id]
        index = len(node.applied) - keep
        if node.core is not None:  # a recovering core may be behind its state machine: snapshot what it applied
            index = min(index, node.core.applied - keep)
        if index <= 0 or (node.snapshot is not None and index <= node.snapshot.index):
            return None
        prefix = tuple(node.applied[:index])
        config = next((e.data for e in reversed(prefix) if e.kind is EntryKind.CONFIG), None)
        if config is None:
            config = node.snapshot.config if node.snapshot is not None else b""
        meta = SnapshotMeta(index, prefix[-1].term, config)
        self.snapshots[(meta.index, meta.term)] = prefix
        node.snapshot = meta
        if node.core is not None:
            node.core.set_snapshot(meta)
        node.log.compact_before(index + 1)
        self.stats["snapshots"] += 1
        return meta

    def full_log(self, node_id: str) -> list[Entry]:
        """Every entry of a live node's log from index 1: what a snapshot (or the state machine) holds below
        the log's first index, then the log itself."""
        log = self.core(node_id).log
        first, last = log.first_index(), log.last_index()
        tail = log.entries(first, last + 1, 1 << 62) if last >= first else []
        if first <= 1:
            return tail
        applied = self.nodes[node_id].applied
        if len(applied) >= first - 1:
            return applied[: first - 1] + tail
        return list(self.snapshots[(first - 1, log.term(first - 1))]) + tail

    def damage(self, node_id: str, keep: int, *, remember: bool = True) -> int:
        """A down node's durable log is damaged, not crashed: every entry after `keep` is lost (at least
        down to the log's first index - 1; its snapshot and state machine survive). With `remember` its
        runtime knew what was durable (the flush checkpoint) and starts it recovering until the lost range
        is back; `remember=False` models a runtime that took the damage for a torn tail (only to show the
        hazard). Its snapshot stays covered (a runtime resets its log to it). Returns how many entries were lost."""
        node = self.nodes[node_id]
        if node.alive:
            raise ValueError(f"{node_id} is running: stop it before its log is damaged")
        log = node.log
        keep = max(keep, log.first_index - 1, node.snapshot.index if node.snapshot is not None else 0)
        lost = log.last_index - keep
        if lost <= 0:
            return 0
        if remember and log.last_index > node.recovering_until:
            node.recovering_until, node.recovering_term = log.last_index, log.term_at(log.last_index)
        log.truncate_after(keep)
        self.stats["damages"] += 1
        return lost

    def repair_in_place(self, node_id: str, keep: int) -> int:
        """A running node finds its durable log damaged after `keep` (a read met a corrupt entry, a segment
        was cut under it) and repairs in place: the core and its pending Ready are dropped (what was not
        persisted is lost, as in a crash), the log is cut after `keep` (`damage`), and a new core starts at
        once, recovering until the lost range is back. Returns how many entries were lost."""
        node = self.nodes[node_id]
        if not node.alive:
            raise ValueError(f"{node_id} is down: use damage() for a stopped node")
        node.core = None
        node.pending = None
        lost = self.damage(node_id, keep)
        self.stats["repairs"] += 1
        self.start(node_id)
        return lost

    def crash(self, node_id: str) -> None:
        """Lose the core and anything not persisted (the pending Ready, unstable entries, volatile state)."""
        node = self.nodes[node_id]
        node.core = None
        node.pending = None
        self.stats["crashes"] += 1

    def restart(self, node_id: str) -> None:
        if self.nodes[node_id].alive:
            self.crash(node_id)
        self.start(node_id)

    def set_config(self, node_id: str, **changes: Any) -> None:
        """Change a node's config for its next start (e.g. preferred leader)."""
        node = self.nodes[node_id]
        node.config = replace(node.config, **changes)

    # ---- time ----

    def tick(self, node_id: str | None = None, times: int = 1) -> None:
        for _ in range(times):
            for i in [node_id] if node_id is not None else self.alive():
                core = self.nodes[i].core
                if core is not None:
                    core.tick()

    # ---- ready / persist ----

    def process(self, node_id: str) -> bool:
        """Take the node's Ready (if any and none pending) and send its `messages` now."""
        node = self.nodes[node_id]
        core = node.core
        if core is None or node.pending is not None or not core.has_ready():
            return False
        rd = core.ready()
        node.pending = rd
        self._send(rd.messages)
        for m in rd.messages:
            if isinstance(m, InstallSnapshot):
                self.stats["snapshots_sent"] += 1
                core.report_snapshot(m.to_id, (m.from_id, m.to_id) not in self.cut)
        return True

    def persist(self, node_id: str) -> bool:
        """Finish the pending Ready: persist, release after-persist messages, apply, advance."""
        node = self.nodes[node_id]
        rd = node.pending
        core = node.core
        if rd is None or core is None:
            return False
        snap = rd.snapshot
        if snap is not None:  # restore the state machine from the (already streamed) snapshot first
            node.applied = list(self.snapshots[(snap.index, snap.term)])
            node.snapshot = snap
            self.stats["snapshots_installed"] += 1
            if self.on_restore is not None:
                self.on_restore(node_id, node.applied)
        persist_ready(rd, node.log, node.store)
        if self.on_persist is not None:
            self.on_persist(node_id, rd)
        self._send(rd.persisted_messages)
        for e in rd.committed_entries:
            if e.index <= len(node.applied):  # applied before its log was damaged: the same entry again
                if node.applied[e.index - 1] != e:
                    raise AssertionError(f"{node_id} re-applies {e} over {node.applied[e.index - 1]}")
                continue
            if e.index != len(node.applied) + 1:
                raise AssertionError(f"{node_id} applies {e.index} after {len(node.applied)}")
            node.applied.append(e)
            if self.on_apply is not None:
                self.on_apply(node_id, e)
        for rs in rd.read_states:
            node.read_states.append(rs)
            if self.on_read is not None:
                self.on_read(node_id, rs)
        node.pending = None
        core.advance(rd)
        if node.recovering_until and not core.recovering_until:
            node.recovering_until = node.recovering_term = 0  # the core has the lost range again, persisted
            self.stats["recoveries"] += 1
        return True

    def handle_ready(self, node_id: str) -> bool:
        """process + persist: the usual driver loop iteration."""
        did = self.persist(node_id)
        if self.process(node_id):
            self.persist(node_id)
            did = True
        return did

    # ---- network ----

    def _send(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            self.stats["sent"] += 1
            self.stats[f"sent.{type(m).__name__}"] += 1
            if isinstance(m, AppendEntriesResponse) and not m.success:
                self.stats["rejects"] += 1
            if (m.from_id, m.to_id) in self.cut:
                self.stats["lost"] += 1
            else:
                self.network.append(m)

    def inject(self, m: Message) -> None:
        """Put any message on the network (e.g. garbage from outside)."""
        self.network.append(m)

    def deliver(self, k: int = 0) -> Message | None:
        """Deliver the k-th message in flight (0 = oldest; any k reorders); None if the network is empty."""
        if not self.network:
            return None
        m = self.network.pop(k % len(self.network))
        node = self.nodes.get(m.to_id)
        if node is None or node.core is None or (m.from_id, m.to_id) in self.cut:
            self.stats["lost"] += 1
            return m
        self.stats["delivered"] += 1
        node.core.step(m)
        return m

    def drop(self, k: int = 0) -> Message | None:
        if not self.network:
            return None
        self.stats["dropped"] += 1
        return self.network.pop(k % len(self.network))

    def duplicate(self, k: int = 0) -> None:
        if self.network:
            self.network.append(self.network[k % len(self.network)])

    def deliver_all(self) -> int:
        """Deliver every message now in flight, oldest first (new ones wait for the next call)."""
        batch, self.network = self.network, []
        for m in batch:
            self.network.insert(0, m)
            self.deliver(0)
        return len(batch)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes in no group are cut from everybody)."""
        where: dict[str, int] = {}
        for g, members in enumerate(groups):
            for i in members:
                where[i] = g
        for a in self.ids:
            for b in self.ids:
                if a != b and where.get(a, -1 - self.ids.index(a)) != where.get(b, -1 - self.ids.index(b)):
                    self.cut.add((a, b))

    def isolate(self, node_id: str) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        self.cut.clear()

    # ---- driving to quiescence ----

    def quiet(self) -> bool:
        return not self.network and all(
            n.pending is None and not n.must_core().has_ready() for n in self.nodes.values() if n.alive
        )

    def run(self, max_rounds: int) -> bool:
        """Like `stabilize` but gives up quietly after `max_rounds`; returns whether it went quiet."""
        try:
            self.stabilize(max_rounds)
        except _NotQuiet:
            return False
        return True

    def stabilize(self, max_rounds: int = 10_000) -> int:
        """Process every Ready and deliver every message until nothing is in flight; returns rounds."""
        for rounds in range(max_rounds):
            busy = False
            for i in self.ids:
                if self.nodes[i].alive:
                    while self.handle_ready(i):
                        busy = True
            if self.network:
                self.deliver_all()
                busy = True
            if not busy:
                return rounds
        raise _NotQuiet(f"no quiescence after {max_rounds} rounds\n{self.describe()}")

    def leader(self) -> str | None:
        """The live leader of the highest term, if any."""
        best: RaftCore | None = None
        for n in self.nodes.values():
            c = n.core
            if c is not None and c.role is Role.LEADER and (best is None or c.current_term > best.current_term):
                best = c
        return best.id if best else None

    def run_until_leader(self, max_ticks: int = 1000) -> str:
        for _ in range(max_ticks):
            self.stabilize()
            lead = self.leader()
            if lead is not None and all(
                self.core(i).leader_id == lead
                for i in self.alive()
                if (lead, i) not in self.cut and i in self.core(lead).membership.members
            ):
                return lead
            self.tick()
        raise AssertionError(f"no leader after {max_ticks} ticks\n{self.describe()}")

    def elect(self, node_id: str, max_ticks: int = 1000) -> None:
        """Make `node_id` the leader by letting only its clock run until it wins."""
        for _ in range(max_ticks):
            if self.core(node_id).role is Role.LEADER:
                self.stabilize()
                return
            self.tick(node_id)
            self.stabilize()
        raise AssertionError(f"{node_id} did not win in {max_ticks} ticks\n{self.describe()}")

    def propose(self, node_id: str, data: bytes) -> Proposed:
        return self.core(node_id).propose(data)

    def try_propose(self, node_id: str, data: bytes) -> Proposed | None:
        try:
            return self.propose(node_id, data)
        except NotLeaderError:
            return None
