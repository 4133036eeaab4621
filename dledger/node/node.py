"""`RaftNode`: the driver. One asyncio task feeds the core and carries out each `Ready` (see raft/ready.py).

Order of work for every Ready, never changed: send `messages`; persist entries and hard state (in the I/O
thread: the loop keeps receiving meanwhile; a small async-flush append with no fsync and no hard-state write
due runs on the loop thread instead, because the thread switches would cost more than the `pwrite`); only
then send `persisted_messages`; apply committed entries to every state machine in index order; settle
client futures; `advance`. The peer links are tasks, so the driver yields one loop turn where they should go
first: after queuing `messages` before an inline persist, after queuing `persisted_messages` before an apply.
Proposals pending when the loop takes its inputs go to the core as one batch (group commit: one AppendEntries
per follower and one write per Ready), each client keeping its own range.
Invariants:
- a client hears "ok" only after its entries are committed (on a quorum, each of which persisted them per
  its flush mode) and applied here; "not written" only when that is certain (refused before proposing,
  or another entry was committed at the proposal's first index); anything else is "outcome unknown";
- storage damage found while running (a corrupt entry or index record, a segment file deleted or cut) is
  repaired in place (`node_repair`: a new, recovering core over the reopened log). Any other storage error,
  or a failed repair, fences the node: it stops taking part in Raft (sends nothing more, so the others elect
  a new leader), fails its waiters as unknown, and reports itself unhealthy; it never acknowledges again;
- term and vote are saved durably before any message that depends on them leaves; the commit index is
  saved at most every `COMMIT_SAVE_INTERVAL` seconds (it only speeds up a restart: it is not needed for
  safety), so that an async-flush node does not fsync on every Ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dledger._proto import dledger_pb2 as pb
from dledger.commitlog import (
    HardStateStore,
    SegmentedLog,
    SnapshotStore,
)
from dledger.node.codec import CodecError, Parts, WireCache, from_pb, to_wire_parts
from dledger.node.config import NodeConfig
from dledger.node.errors import BusyError, LeaderHint, NodeNotLeaderError, NodeOutcomeUnknownError, NodeStoppedError
from dledger.node.node_members import MembersMixin, Roster
from dledger.node.node_repair import RepairMixin
from dledger.node.node_snapshots import Snapshots
from dledger.node.peer_transports import Transport, make_transport
from dledger.node.startup import REPLACE_STORE_HINT, core_config, load_hard_state, open_log, recovering_start
from dledger.node.state_machine import StateMachine
from dledger.node.stats import NodeStats
from dledger.raft import (
    NotLeaderError,
    ProposalDroppedError,
    RaftCore,
    Ready,
    Role,
)
from dledger.raft.log import payload_size
from dledger.raft.messages import InstallSnapshot, Message
from dledger.storage_api import Entry, HardState, SnapshotMeta, UnavailableError

__all__ = ["COMMIT_SAVE_INTERVAL", "REPLACE_STORE_HINT", "RaftNode", "RoleCallback"]

log = logging.getLogger(__name__)

COMMIT_SAVE_INTERVAL = 0.2
INLINE_MAX_BYTES = 4 << 20  # async-flush persists up to this size run on the loop thread (see _persist_inline_ok)
INLINE_MAX_ENTRIES = 8192
TIMER_RESOLUTION = 0.001  # seconds: the shortest wait the driver asks of the event loop (see _drive)
RoleCallback = Callable[[str, int, str | None], None]  # (role, term, leader id)
_Future = asyncio.Future[tuple[int, int]]


@dataclass(slots=True)
class _Waiter:
    first: int
    last: int
    term: int
    future: asyncio.Future[tuple[int, int]]
    first_ok: bool = False
    proposed_at: float = 0.0  # time.perf_counter() when proposed, for the commit latency


class RaftNode(MembersMixin, RepairMixin):
    """Drives one `RaftCore` over a `SegmentedLog`, an LMDB hard state and the peer transport."""

    def __init__(
        self,
        config: NodeConfig,
        state_machines: Sequence[StateMachine] = (),
        *,
        seed: int | None = None,
        transport_factory: Callable[[NodeConfig], Transport] = make_transport,
    ):
        """`transport_factory`: builds the peer transport at `start` (default: the one `config` names)."""
        self.config = config
        self._transport_factory = transport_factory
        self.group = config.group
        self.max_entry_bytes = config.max_entry_bytes
        self.state_machines = list(state_machines)
        self.stats = NodeStats()
        self._seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self._role_callbacks: list[RoleCallback] = []
        self._last_leader: str | None = None
        #: called with the seconds from proposal to commit-and-apply of each acknowledged client append
        self.commit_observer: Callable[[float], None] | None = None
        self._inbox: list[pb.PeerMessage] = []
        self._proposals: list[tuple[list[bytes], asyncio.Future[tuple[int, int]]]] = []
        self._read_requests: list[asyncio.Future[int]] = []
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._reads_ready: list[tuple[int, asyncio.Future[int]]] = []
        self._waiters: deque[_Waiter] = deque()
        self._read_seq = 0
        self._sm_applied: list[int] = []
        self._wake: asyncio.Event | None = None
        self._sleeper: asyncio.Future[None] | None = None  # the driver's idle wait, resolved by `_poke`
        self._io_jobs = 0  # I/O-thread jobs other than persists (compaction) in progress
        self._task: asyncio.Task[None] | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"dledger-io-{config.self_id}")
        self._stopping = False
        self._fenced: BaseException | None = None
        self._saved = HardState()
        self._commit_saved_at = 0.0
        self._recovering_mark = 0  # the durable recovering mark this run keeps (0: none)
        self.log: SegmentedLog | None = None
        self.hard_state_store: HardStateStore | None = None
        self.core: RaftCore | None = None
        self.transport: Transport | None = None
        self.snapshots = Snapshots(config, self.state_machines, self.stats, self._io)
        self.roster = Roster(config)
        self._init_repair()

    # ---- lifecycle ----
    def open_storage(self) -> None:
        """Recover the log and hard state and build the core (blocking: call before `start`). On an error
        (e.g. `RecoveryRefusedError`) whatever was opened is closed again."""
        try:
            self._open_storage()
        except BaseException:
            self.core = None
            for closable in (self.log, self.hard_state_store):
                if closable is not None:
                    closable.close()
            self.log = self.hard_state_store = None
            raise

    def _open_storage(self) -> None:
        cfg = self.config
        self.log = open_log(cfg)
        self.hard_state_store = HardStateStore.open(cfg.store_dir / "state")
        self.snapshots.store = store = SnapshotStore(cfg.store_dir / "snapshots", keep=cfg.snapshot_keep)
        saved = load_hard_state(self.hard_state_store, self.log, store)
        latest = self.snapshots.recover(self.log)
        self._sm_applied = [sm.last_applied() for sm in self.state_machines]
        applied = min(self._sm_applied, default=0)
        # whatever a state machine applied was committed. The commit index is not cut to the log's end: a log
        # that ends below it lost entries it had persisted, and the node starts recovering (see `recovering_start`)
        commit = max(saved.commit_index, applied, latest.index if latest else 0)
        applied = max(min(applied, commit), latest.index if latest else 0)
        recovering_until = recovering_start(self.log, self.hard_state_store, commit, cfg.self_id)
        self._recovering_mark = recovering_until
        self._saved = HardState(saved.current_term, saved.voted_for, commit, saved.config)
        self.core = RaftCore(
            core_config(cfg, applied, recovering_until),
            self.log,
            self._saved,
            random.Random(self._seed),
        )
        if latest is not None:
            self.core.set_snapshot(latest)
        self.roster.check_at_start(self.core.membership)

    def start(self) -> None:
        """Start the driver task on the running loop (storage must be open)."""
        if self.core is None:
            raise RuntimeError("open_storage() first")
        self._wake = asyncio.Event()
        self.transport = self._transport_factory(self.config)
        self.transport.start()
        assert self.core is not None
        core = self.core
        self.snapshots.start(lambda: self.current_term, self.deliver, self.transport.send_snapshot_chunk, self._sent)
        self._on_membership(core)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-{self.config.self_id}")

    async def stop(self) -> None:
        """Stop driving: pending requests fail with a clear status, files are closed."""
        self._stopping = True
        self._poke()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        stopped = NodeStoppedError("the node is stopping")
        self._fail_all(stopped, NodeOutcomeUnknownError("the node stopped before commit"))
        await self.snapshots.close()
        if self.transport is not None:
            await self.transport.close()
        await asyncio.get_running_loop().run_in_executor(self._io, self._close_storage)
        self._io.shutdown(wait=True)

    def _close_storage(self) -> None:
        if self.core is not None and self.hard_state_store is not None and self._fenced is None:
            try:
                self._save_hard_state(self.core.hard_state, force=True)
            except Exception:
                log.exception("saving the hard state at stop failed")
        if self.log is not None:
            self.log.close()
        if self.hard_state_store is not None:
            self.hard_state_store.close()

    # ---- inputs (called on the loop thread) ----
    def on_role_change(self, callback: RoleCallback) -> None:
        self._role_callbacks.append(callback)

    def deliver(self, messages: Sequence[pb.PeerMessage]) -> None:
        """The transport's callback for validated peer messages."""
        self._inbox.extend(messages)
        self._poke()

    async def append(self, items: Sequence[bytes]) -> tuple[int, int]:
        return await self.submit(items)

    def submit(self, items: Sequence[bytes]) -> asyncio.Future[tuple[int, int]]:
        """`append` without a coroutine per request (the streaming service's path): the future settles
        with (first index, term) or the error `append` would raise."""
        self._check_running()
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._proposals.append((list(items), future))
        self._poke()
        return future

    async def read_index(self) -> int:
        self._check_running()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_requests.append(future)
        self._poke()
        return await future

    async def get(self, index: int) -> Entry:
        """The committed entry at `index`. Only entries both committed and written here are read here
        (`readable`: a commit index can run ahead of this node's own persist). Past that the answer comes from
        the leader: a follower learns commits a heartbeat late, and a new leader only once its own first entry
        commits, so "not committed" from them could deny an entry whose append was already acknowledged. A
        follower raises NodeNotLeaderError (the client asks the leader); the leader first confirms its commit
        index with a ReadIndex round (which returns once it applied that far, so those entries are written
        here), and only then says UnavailableError (not committed, or past the end)."""
        self._check_running()
        core = self.core
        assert core is not None
        if index > self._readable(core):
            if core.role is not Role.LEADER:
                raise NodeNotLeaderError(self._hint(core.leader_id))
            await self.read_index()  # afterwards every entry committed before this call is readable
            if index > self._readable(core):
                raise UnavailableError(f"index {index} is not committed (commit index {core.commit_index})")
        return self._read_entry(index)

    @staticmethod
    def _readable(core: RaftCore) -> int:
        """The last index both committed and written to this node's log."""
        return min(core.commit_index, core.log.stable_last_index())

    async def transfer_leadership(self, to_id: str) -> None:
        self._check_running()
        core = self.core
        assert core is not None
        try:
            core.transfer_leadership(to_id)
        except NotLeaderError as exc:
            raise NodeNotLeaderError(self._hint(exc.leader_id)) from None
        self._poke()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * self.config.election_timeout_ms / 1000
        while core.leader_id != to_id or (core.role is Role.LEADER and to_id != self.config.self_id):
            if loop.time() > deadline:
                raise NodeOutcomeUnknownError(f"leadership did not move to {to_id} in time (leader: {core.leader_id})")
            await asyncio.sleep(self.config.tick_ms / 1000)

    async def compact(self, before_index: int) -> int:
        """Drop whole log segments below `before_index` (never past what is applied here, and never past the
        latest snapshot: one is taken first when needed, so a follower that needs the dropped entries gets
        the snapshot instead); returns the new first index. Runs in the I/O thread, never racing an append."""
        self._check_running()
        core, store = self.core, self.log
        assert core is not None and store is not None
        limit = min(before_index, core.applied + 1)
        if self.snapshots.can_take():
            snap = core.snapshot
            if snap is None or snap.index + 1 < limit:
                snap = await self.snapshots.take_when_applied(core, store, self._sm_applied) or snap
            limit = min(limit, snap.index + 1 if snap is not None else 1)
        self._io_jobs += 1
        try:
            await asyncio.get_running_loop().run_in_executor(self._io, store.compact_before, limit)
        finally:
            self._io_jobs -= 1
        return store.first_index

    # ---- snapshots (the work is `Snapshots`'s) ----
    async def receive_snapshot_chunk(self, chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
        """The peer servicer's callback for InstallSnapshot chunks."""
        inbox = self.snapshots.inbox
        if inbox is None or self._fenced is not None or self._stopping:
            return pb.SnapshotAck(ok=False, error="the node is not running")
        return await inbox.on_chunk(chunk)

    def snapshot_index(self) -> int:
        core = self.core
        return core.snapshot.index if core is not None and core.snapshot is not None else 0

    async def take_snapshot(self) -> SnapshotMeta | None:
        """Snapshot the state machines now (at the applied index); None when one cannot snapshot or the
        applied index is not the commit index yet."""
        self._check_running()
        assert self.core is not None and self.log is not None
        return self.snapshots.take(self.core, self.log, self._sm_applied)

    def _sent(self, to_id: str, ok: bool) -> None:
        """A snapshot transfer's outcome, for the core (unless the node stopped or was fenced meanwhile)."""
        core = self.core
        if core is not None and not self._stopping and self._fenced is None:
            core.report_snapshot(to_id, ok)
            self._poke()

    def leader_hint(self) -> LeaderHint:
        return self._hint(self.core.leader_id if self.core else None)

    def node_status(self) -> pb.NodeStatus:
        core, store = self.core, self.log
        if core is None or store is None:
            return pb.NodeStatus(id=self.config.self_id, address=self.config.address, healthy=False, error="not open")
        role = self.role
        if role == "follower" and not core.is_voter():
            role = "learner" if core.membership.is_learner(self.config.self_id) else "non-member"
        elif (role == "follower" and core.recovering_until) or self._repairing:
            role = "recovering"
        return pb.NodeStatus(
            id=self.config.self_id,
            address=self.config.address,
            role=role,
            term=core.current_term,
            leader_id=core.leader_id or "",
            first_index=store.first_index,
            last_index=core.last_index,
            commit_index=core.commit_index,
            applied_index=core.applied,
            healthy=self._fenced is None and not self._stopping and core.leader_id is not None,
            error=self.stats.fenced,
            recovering_until=core.recovering_until,
        )

    @property
    def current_term(self) -> int:
        """The core's current term (0 before storage is open)."""
        return self.core.current_term if self.core else 0

    @property
    def role(self) -> str:
        """The core's role, or "fenced" after a storage error, or "stopped" before start."""
        if self._fenced is not None:
            return "fenced"
        return self.core.role.value if self.core else "stopped"

    # ---- the loop ----
    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()
        sleeper = self._sleeper
        if sleeper is not None and not sleeper.done():
            sleeper.set_result(None)

    def _check_running(self) -> None:
        if self._fenced is not None:
            raise NodeStoppedError(f"the node is fenced after a storage error: {self._fenced}")
        if self._stopping or self._task is None:
            raise NodeStoppedError("the node is not running")

    def _new_waiter(self, first: int, last: int, term: int) -> _Future:
        """A client waiting for entries first..last of `term` to be committed and applied here."""
        future: _Future = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(first, last, term, future, proposed_at=time.perf_counter()))
        return future

    def _hint(self, leader_id: str | None) -> LeaderHint:
        if not leader_id:
            return LeaderHint()
        return LeaderHint(leader_id, self.config.peers.get(leader_id, ""))

    async def _drive(self) -> None:
        """Drive the core until stopped; an error propagates to `_run` (node_repair), which repairs or fences."""
        core, wake = self.core, self._wake
        assert core is not None and wake is not None
        loop = asyncio.get_running_loop()
        interval = self.config.tick_ms / 1000
        next_tick = loop.time() + interval
        lease_reads = self.config.lease_read
        while not self._stopping:
            if not (self._inbox or self._proposals or self._read_requests or core.has_ready()):
                delay = next_tick - loop.time()
                if delay > 0:
                    wake.clear()
                    sleeper = loop.create_future()
                    self._sleeper = sleeper
                    # at least the timer resolution: uvloop's clock and timers count whole milliseconds
                    # and run a shorter delay at once, which spun this loop until the clock moved on
                    timer = loop.call_later(max(delay, TIMER_RESOLUTION), _wake_up, sleeper)
                    await sleeper
                    timer.cancel()
                    self._sleeper = None
                    self.stats.wakeups += 1
            # After a stall (a pause, GC, a long write) a leader that serves lease reads sees every
            # elapsed tick before it takes any input: otherwise it would serve lease reads from a lease
            # that ran out while it stood still. Every other node takes its input first: a leader
            # without lease reads counts the answers that reached it meanwhile before check-quorum
            # looks (its keepalive heartbeats were answered during a long write); the other roles then
            # catch up at most a heartbeat's worth: a slow follower clock only delays its elections
            # and extends its refusal to vote, which is the safe side for a leader's lease, and it
            # spares a loaded machine needless elections.
            now = loop.time()
            elapsed = int((now - next_tick) / interval) + 1 if now >= next_tick else 0
            next_tick += elapsed * interval
            if elapsed and core.role is Role.LEADER and lease_reads:
                for _ in range(elapsed):
                    core.tick()
                elapsed = 0
            self._take_damage()
            self._feed(core)
            for _ in range(min(elapsed, core.config.heartbeat_tick)):
                core.tick()
            while core.has_ready() and not self._stopping:
                await self._handle_ready(core, core.ready())

    def _feed(self, core: RaftCore) -> None:
        inbox, self._inbox = self._inbox, []
        for raw in inbox:
            try:
                core.step(from_pb(raw))
            except CodecError as exc:
                self.stats.decode_errors += 1
                log.warning("dropping a peer message: %s", exc)
        proposals, self._proposals = self._proposals, []
        live = [(items, future) for items, future in proposals if not future.done()]
        if len(live) > 1 and self._propose_together(core, live):
            live = []
        for items, future in live:
            try:
                p = core.propose_batch(items)
            except NotLeaderError as exc:
                _fail(future, NodeNotLeaderError(self._hint(exc.leader_id)))
            except ProposalDroppedError as exc:
                _fail(future, BusyError(str(exc)))
            else:
                self._waiters.append(
                    _Waiter(p.first_index, p.last_index, p.term, future, proposed_at=time.perf_counter())
                )
        requests, self._read_requests = self._read_requests, []
        for read in requests:
            self._read_seq += 1
            context = struct.pack(">Q", self._read_seq)
            try:
                core.read_index(context)
            except NotLeaderError as exc:
                _fail(read, NodeNotLeaderError(self._hint(exc.leader_id)))
            else:
                self._reads[context] = read

    def _propose_together(self, core: RaftCore, proposals: list[tuple[list[bytes], _Future]]) -> bool:
        """Group commit: every pending proposal as one contiguous batch (one AppendEntries per follower, one
        write), each waiter keeping its own sub-range. False (nothing proposed) when the whole does not fit
        the back-pressure limit, so that the caller proposes them one by one and only the excess is refused."""
        merged = [data for items, _ in proposals for data in items]
        try:
            p = core.propose_batch(merged)
        except NotLeaderError as exc:
            for _, future in proposals:
                _fail(future, NodeNotLeaderError(self._hint(exc.leader_id)))
            return True
        except ProposalDroppedError:
            return False
        first, waiters, now = p.first_index, self._waiters, time.perf_counter()
        for items, future in proposals:
            last = first + len(items) - 1
            waiters.append(_Waiter(first, last, p.term, future, proposed_at=now))
            first = last + 1
        return True

    async def _handle_ready(self, core: RaftCore, rd: Ready) -> None:
        self.stats.readies += 1
        if rd.soft_state is not None:
            self._on_soft_state(core)
        self._send(rd.messages)
        if rd.must_sync:
            size = payload_size(rd.entries)
            inline = self._persist_inline_ok(rd, size)
            if inline and rd.messages:
                # the peer links hand this Ready's appends to gRPC first, so the write overlaps their trip
                await asyncio.sleep(0)
                inline = self._persist_inline_ok(rd, size)  # an I/O job may have started meanwhile
            if inline:
                self._persist(rd)
            else:
                await self._persist_keeping_alive(core, rd)
            self.stats.entries_persisted += len(rd.entries)
            self.stats.bytes_persisted += size
        if rd.snapshot is not None:
            self._sm_applied = self.snapshots.install(rd.snapshot)
        self._send(rd.persisted_messages)
        if rd.persisted_messages and rd.committed_entries:
            await asyncio.sleep(0)  # the answers leave before the apply (a follower's acks gate the commit)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        for rs in rd.read_states:
            future = self._reads.pop(rs.context, None)
            if future is not None:
                self._reads_ready.append((rs.index, future))
        core.advance(rd)
        if self._recovering_mark and not core.recovering_until:
            await self._end_recovering(core)
        self._on_membership(core)
        if rd.committed_entries:
            assert self.log is not None
            self.snapshots.take_if_due(core, self.log, self._sm_applied)
        if self._reads_ready:
            applied = core.applied
            still = []
            for index, future in self._reads_ready:
                if index <= applied:
                    _succeed(future, index)
                else:
                    still.append((index, future))
            self._reads_ready = still

    def _persist_inline_ok(self, rd: Ready, size: int) -> bool:
        """Whether this Ready's persist is cheap enough to run on the loop thread: async flush (no fsync),
        a plain append of a few entries (no truncation), no hard-state write due, no other I/O job running.
        The order of work is the same either way; this only saves the two thread switches of the I/O pool,
        which cost more than such a write (a `pwrite` into the page cache). `size`: the entries' payload bytes."""
        store = self.log
        if self.config.flush != "async" or self._io_jobs or store is None or rd.snapshot is not None:
            return False
        entries = rd.entries
        if entries and (
            entries[0].index <= store.last_index or len(entries) > INLINE_MAX_ENTRIES or size > INLINE_MAX_BYTES
        ):
            return False
        return rd.hard_state is None or not self._hard_state_write_due(rd.hard_state, time.monotonic())

    def _hard_state_write_due(self, hs: HardState, now: float) -> bool:
        saved = self._saved
        if hs.current_term != saved.current_term or hs.voted_for != saved.voted_for:
            return True
        return hs.commit_index != saved.commit_index and now - self._commit_saved_at >= COMMIT_SAVE_INTERVAL

    def _persist(self, rd: Ready) -> None:
        store = self.log
        assert store is not None
        if rd.snapshot is not None:  # the snapshot file is stored already (SnapshotInbox); the state
            store.reset(rd.snapshot.index, rd.snapshot.term)  # machines are restored after this persist
        if rd.entries:
            first = rd.entries[0].index
            if first <= store.last_index:
                store.truncate_after(first - 1)
            store.append(rd.entries)
        if rd.hard_state is not None:
            self._save_hard_state(rd.hard_state)

    def _save_hard_state(self, hs: HardState, *, force: bool = False) -> None:
        store = self.hard_state_store
        assert store is not None
        now = time.monotonic()
        if self._hard_state_write_due(hs, now) or (force and hs != self._saved):
            store.save(hs)
            self._saved = hs
            self._commit_saved_at = now

    def _send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        transport = self.transport
        assert transport is not None
        by_peer: dict[str, list[bytes | Parts]] = defaultdict(list)
        cache: WireCache = {}
        for m in messages:
            if isinstance(m, InstallSnapshot):  # the bytes go first, in chunks; see snapshot_transfer
                self.snapshots.start_send(m)
                continue
            by_peer[m.to_id].append(to_wire_parts(m, cache))
        for to_id, batch in by_peer.items():
            transport.send(to_id, batch)

    async def _persist_keeping_alive(self, core: RaftCore, rd: Ready) -> None:
        """Persist `rd` on the I/O thread. A leader's driver does not tick while it waits, so a long write
        (tens of MiB, a slow disk) would leave its followers without heartbeats past their election timeout:
        meanwhile the core's keepalive heartbeats go out every heartbeat interval (a timer, so a write that
        ends sooner, the usual case, costs one timer and nothing more)."""
        loop = asyncio.get_running_loop()
        interval = self.config.heartbeat_ms / 1000
        timer: asyncio.TimerHandle | None = None

        def keepalive() -> None:
            nonlocal timer
            heartbeats = core.keepalive()
            self._send(heartbeats)
            self.stats.keepalive_heartbeats += len(heartbeats)
            timer = loop.call_later(interval, keepalive)

        timer = loop.call_later(interval, keepalive)
        try:
            await loop.run_in_executor(self._io, self._persist, rd)
        finally:
            timer.cancel()

    def _apply(self, entries: Sequence[Entry]) -> None:
        for k, sm in enumerate(self.state_machines):
            done = self._sm_applied[k]
            for entry in entries:
                if entry.index > done:
                    sm.apply(entry)
            self._sm_applied[k] = max(done, entries[-1].index)
        waiters = self._waiters
        if not waiters:
            return
        for entry in entries:
            while waiters and waiters[0].last < entry.index:  # cannot happen: indexes are contiguous
                _fail(waiters.popleft().future, NodeOutcomeUnknownError("lost track of the proposal"))
            if not waiters:
                break
            w = waiters[0]
            if entry.index == w.first:
                w.first_ok = entry.term == w.term
            if entry.index == w.last:
                waiters.popleft()
                if entry.term == w.term:
                    _succeed(w.future, (w.first, w.term))
                    if self.commit_observer is not None:
                        self.commit_observer(time.perf_counter() - w.proposed_at)
                elif w.first_ok:
                    _fail(w.future, NodeOutcomeUnknownError("only part of the batch was committed"))
                else:
                    _fail(w.future, NodeNotLeaderError(self.leader_hint(), "overwritten by a new leader"))

    def _on_soft_state(self, core: RaftCore) -> None:
        self.stats.role_changes += 1
        role, term, leader = core.role.value, core.current_term, core.leader_id
        if core.role is Role.CANDIDATE:
            self.stats.elections += 1
        if leader is not None and leader != self._last_leader:
            self.stats.leader_changes += 1
            self._last_leader = leader
        log.info("node %s is %s in term %d (leader %s)", self.config.self_id, role, term, leader)
        if core.role is not Role.LEADER:
            for future in self._reads.values():
                _fail(future, NodeNotLeaderError(self._hint(leader), "leadership lost"))
            self._reads.clear()
        for callback in self._role_callbacks:
            try:
                callback(role, term, leader)
            except Exception:
                log.exception("role-change callback failed")

    def _fence(self, exc: BaseException) -> None:
        self._fenced = exc
        self.stats.fenced = f"{type(exc).__name__}: {exc}"
        log.error("node %s fenced after an error; it takes no further part: %s", self.config.self_id, exc)
        self._fail_all(NodeStoppedError(f"storage error: {exc}"), NodeOutcomeUnknownError(f"storage error: {exc}"))

    def _fail_all(self, refused: Exception, unknown: Exception) -> None:
        for _, future in self._proposals:
            _fail(future, refused)
        self._proposals.clear()
        for read in [*self._read_requests, *self._reads.values(), *(f for _, f in self._reads_ready)]:
            _fail(read, refused)
        self._read_requests.clear()
        self._reads.clear()
        self._reads_ready.clear()
        while self._waiters:
            future = self._waiters.popleft().future
            _fail(future, unknown)


def _wake_up(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Settle with an error unless the caller already gave up (a cancelled RPC cancels its future)."""
    if not future.done():
        future.set_exception(exc)


def _succeed(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
