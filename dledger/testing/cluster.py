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
  `restart(id)` builds a new core from it (applied = what the state machine holds).
Messages between nodes may be delivered in any order, dropped or duplicated; links can be cut.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dledger.raft import (
    AppendEntriesResponse,
    Config,
    Message,
    NotLeaderError,
    Proposed,
    RaftCore,
    ReadState,
    Ready,
    Role,
    persist_ready,
)
from dledger.storage_api import Entry, HardState
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
        cfg = replace(node.config, applied=len(node.applied))
        rng = random.Random(f"{self.seed}/{node_id}/{node.incarnation}")
        node.core = RaftCore(cfg, node.log, node.store.load(), rng)
        node.pending = None

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
        return True

    def persist(self, node_id: str) -> bool:
        """Finish the pending Ready: persist, release after-persist messages, apply, advance."""
        node = self.nodes[node_id]
        rd = node.pending
        core = node.core
        if rd is None or core is None:
            return False
        persist_ready(rd, node.log, node.store)
        if self.on_persist is not None:
            self.on_persist(node_id, rd)
        self._send(rd.persisted_messages)
        for e in rd.committed_entries:
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
                self.core(i).leader_id == lead for i in self.alive() if (lead, i) not in self.cut
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
