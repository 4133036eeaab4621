"""The snapshot half of the node driver: `Snapshots`, which `RaftNode` owns and calls, takes, installs,
receives and sends snapshots.

Rules (the core's side is in `dledger/raft/snapshot.py`):
- at start, before the core is built: a snapshot newer than the log's end (an install interrupted before
  the log was reset, or a log that lost its unsynced tail) resets the log after it; a state machine whose
  own state ends below the log's first entry is restored from the latest snapshot, and a node with no
  snapshot covering that gap refuses to start with a clear error (never a half-rebuilt state);
- a snapshot is taken on the event loop between applies (the state machines' contract), only when the
  applied index is the commit index (so its configuration is `core.committed_membership`): every
  `snapshot_entries` applied entries, and before every compaction, which never drops entries that no
  snapshot covers;
- installing a leader's snapshot: the file is stored and checked first (`SnapshotInbox`), the core asks
  for it in `Ready.snapshot`, the persist resets the log, then every state machine is restored from it;
- sending: one transfer per follower at a time (`snapshot_transfer.send_snapshot`), its outcome reported
  to the core (through the node's `report` callback, which drops it once the node stops or is fenced).

`Snapshots` holds no core and no log: the node passes the ones in effect (an in-place repair replaces both).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from dledger._proto import dledger_pb2 as pb
from dledger.node.snapshot_image import restore_image, write_image
from dledger.node.snapshot_transfer import SnapshotInbox, send_snapshot
from dledger.node.state_machine import SnapshottingStateMachine, StateMachine
from dledger.raft.messages import InstallSnapshot
from dledger.storage_api import SnapshotMeta

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from dledger.commitlog import SegmentedLog, SnapshotStore
    from dledger.node.config import NodeConfig
    from dledger.node.stats import NodeStats
    from dledger.raft import RaftCore

__all__ = ["SendChunkTo", "Snapshots"]

log = logging.getLogger("dledger.node.node")

SendChunkTo = Callable[[str, pb.SnapshotChunk, float], Awaitable[pb.SnapshotAck]]  # (to id, chunk, timeout)


class Snapshots:
    """The node's snapshot store and the work on it (see the module docstring). File work runs on `io`,
    the node's I/O thread; everything else on the loop thread."""

    def __init__(
        self,
        config: NodeConfig,
        state_machines: Sequence[StateMachine],
        stats: NodeStats,
        io: ThreadPoolExecutor,
    ) -> None:
        self.store: SnapshotStore | None = None  # set by the node's `open_storage`
        self._config = config
        self._machines = state_machines
        self._stats = stats
        self._io = io
        self.inbox: SnapshotInbox | None = None  # set by `start`
        self._send_chunk: SendChunkTo | None = None
        self._report: Callable[[str, bool], None] | None = None
        self._sends: dict[str, asyncio.Task[None]] = {}

    def _files(self) -> SnapshotStore:
        store = self.store
        assert store is not None, "open_storage() first"
        return store

    def start(
        self,
        current_term: Callable[[], int],
        deliver: Callable[[Sequence[pb.PeerMessage]], None],
        send_chunk: SendChunkTo,
        report: Callable[[str, bool], None],
    ) -> None:
        """Open the receiving end (`deliver` gets the checked InstallSnapshot) and the sending one (`report`
        gets each transfer's outcome, for the core)."""
        self.inbox = SnapshotInbox(self._files(), self._io, self._config.self_id, current_term, deliver)
        self._send_chunk, self._report = send_chunk, report

    async def close(self) -> None:
        """Cancel the transfers in progress and close the receiving end."""
        for task in self._sends.values():
            task.cancel()
        await asyncio.gather(*self._sends.values(), return_exceptions=True)
        if self.inbox is not None:
            await asyncio.get_running_loop().run_in_executor(self._io, self.inbox.close)

    def recover(self, store: SegmentedLog) -> SnapshotMeta | None:
        """At start: finish an interrupted snapshot install and restore state machines whose state the log
        no longer covers (a wiped or torn state machine store after compaction). Returns the latest snapshot."""
        snapshots = self._files()
        latest = snapshots.latest()
        if latest is not None and latest.index > store.last_index:
            # installed from a leader (or taken here) but the log was not reset yet, or lost its unsynced tail:
            # everything up to the snapshot is committed, so the log continues after it
            log.warning(
                "the log ends at %d below the snapshot at %d: continuing the log after it",
                store.last_index,
                latest.index,
            )
            store.reset(latest.index, latest.term)
        first = store.first_index
        machines = self._machines
        stale = [k for k, sm in enumerate(machines) if sm.last_applied() < first - 1]
        if stale:
            if latest is None or latest.index < first - 1:
                sm = machines[stale[0]]
                raise RuntimeError(
                    f"state machine {type(sm).__name__} applied up to {sm.last_applied()} but the log starts at "
                    f"{first} and no snapshot covers the gap (restore its store, or wipe this node and re-add it)"
                )
            log.info("restoring %d state machine(s) from snapshot %d", len(stale), latest.index)
            with snapshots.open(latest) as src:
                restore_image(src, machines, latest.index, only=stale)
        return latest

    def can_take(self) -> bool:
        return self.store is not None and all(isinstance(sm, SnapshottingStateMachine) for sm in self._machines)

    def take(self, core: RaftCore, store: SegmentedLog, sm_applied: Sequence[int]) -> SnapshotMeta | None:
        """On the loop thread, between applies (the state machines' contract): write every machine's image
        at the applied index, which must be the commit index (so the configuration at it is known).
        `sm_applied`: what each machine applied; None when one cannot snapshot or the indexes disagree."""
        applied = core.applied
        if core.snapshot is not None and core.snapshot.index >= applied:
            return core.snapshot
        if applied == 0 or applied != core.commit_index or not self.can_take():
            return None
        if any(done != applied for done in sm_applied):
            return None  # after an in-place repair the machines are ahead until the leader gives the range back
        meta = SnapshotMeta(applied, store.term_at(applied), core.committed_membership.encode())
        with self._files().create(meta) as writer:
            write_image(writer, self._machines, applied)  # type: ignore[arg-type]
            writer.commit()
        core.set_snapshot(meta)
        self._stats.snapshots_taken += 1
        log.info("snapshot taken at index %d (term %d)", meta.index, meta.term)
        return meta

    def take_if_due(self, core: RaftCore, store: SegmentedLog, sm_applied: Sequence[int]) -> None:
        """After an apply: a snapshot once `snapshot_entries` entries were applied since the latest one."""
        every = self._config.snapshot_entries
        if every:
            snap = core.snapshot
            if core.applied - (snap.index if snap else 0) >= every:
                self.take(core, store, sm_applied)

    async def take_when_applied(
        self, core: RaftCore, store: SegmentedLog, sm_applied: Sequence[int]
    ) -> SnapshotMeta | None:
        """A snapshot at the applied index, which must be the commit index: between a Ready's persist and its
        apply they differ for a moment, so wait (a few ticks at most) rather than compact nothing."""
        loop = asyncio.get_running_loop()
        tick = self._config.tick_ms / 1000
        deadline = loop.time() + 10 * tick
        while True:
            snap = self.take(core, store, sm_applied)
            if snap is not None or core.applied == core.commit_index or loop.time() > deadline:
                return snap
            await asyncio.sleep(tick / 4)

    def install(self, meta: SnapshotMeta) -> list[int]:
        """After the persist reset the log to `meta`: restore every state machine from the stored file.
        Returns what each machine applied now (`meta.index`)."""
        if self._machines:
            with self._files().open(meta) as src:
                restore_image(src, self._machines, meta.index)
        self._stats.snapshots_installed += 1
        log.info("installed the leader's snapshot at index %d (term %d)", meta.index, meta.term)
        return [meta.index] * len(self._machines)

    def start_send(self, m: InstallSnapshot) -> None:
        running = self._sends.get(m.to_id)
        if running is not None and not running.done():
            return  # the core waits for report_snapshot before it asks again
        task = asyncio.get_running_loop().create_task(self._send(m), name=f"snapshot-to-{m.to_id}")
        self._sends[m.to_id] = task

    async def _send(self, m: InstallSnapshot) -> None:
        send_to, report = self._send_chunk, self._report
        assert send_to is not None and report is not None
        timeout = max(5.0, self._config.rpc_timeout_ms / 1000)

        def send_chunk(chunk: pb.SnapshotChunk) -> Awaitable[pb.SnapshotAck]:
            return send_to(m.to_id, chunk, timeout)

        ok = await send_snapshot(self._files(), self._io, m, send_chunk, self._config.snapshot_chunk_bytes)
        if ok:
            self._stats.snapshots_sent += 1
        report(m.to_id, ok)
