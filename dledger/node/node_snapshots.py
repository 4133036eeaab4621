"""The snapshot half of the node driver (`RaftNode` mixes it in): taking, installing and sending snapshots.

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
  to the core with `report_snapshot`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dledger._proto import dledger_pb2 as pb
from dledger.node.snapshot_image import restore_image, write_image
from dledger.node.snapshot_transfer import SnapshotInbox, send_snapshot
from dledger.node.state_machine import SnapshottingStateMachine, StateMachine
from dledger.raft import RaftCore
from dledger.raft.messages import InstallSnapshot
from dledger.storage_api import SnapshotMeta

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from dledger.commitlog import SegmentedLog, SnapshotStore
    from dledger.node.config import NodeConfig
    from dledger.node.peer_transports import Transport

__all__ = ["SnapshotsMixin"]

log = logging.getLogger("dledger.node.node")


class SnapshotsMixin:
    """Snapshot work of `RaftNode` (see the module docstring)."""

    # state owned by RaftNode
    config: NodeConfig
    state_machines: list[StateMachine]
    stats: Any
    core: RaftCore | None
    log: SegmentedLog | None
    snapshots: SnapshotStore | None
    snapshot_inbox: SnapshotInbox | None
    transport: Transport | None
    _io: ThreadPoolExecutor
    _sm_applied: list[int]
    _snapshot_sends: dict[str, asyncio.Task[None]]
    _stopping: bool
    _fenced: BaseException | None

    if TYPE_CHECKING:

        def _check_running(self) -> None: ...
        def _poke(self) -> None: ...

    def _recover_from_snapshot(self) -> SnapshotMeta | None:
        """At start: finish an interrupted snapshot install and restore state machines whose state the log
        no longer covers (a wiped or torn state machine store after compaction). Returns the latest snapshot."""
        store, snapshots = self.log, self.snapshots
        assert store is not None and snapshots is not None
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
        stale = [k for k, sm in enumerate(self.state_machines) if sm.last_applied() < first - 1]
        if stale:
            if latest is None or latest.index < first - 1:
                sm = self.state_machines[stale[0]]
                raise RuntimeError(
                    f"state machine {type(sm).__name__} applied up to {sm.last_applied()} but the log starts at "
                    f"{first} and no snapshot covers the gap (restore its store, or wipe this node and re-add it)"
                )
            log.info("restoring %d state machine(s) from snapshot %d", len(stale), latest.index)
            with snapshots.open(latest) as src:
                restore_image(src, self.state_machines, latest.index, only=stale)
        return latest

    async def receive_snapshot_chunk(self, chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
        """The peer servicer's callback for InstallSnapshot chunks."""
        if self.snapshot_inbox is None or self._fenced is not None or self._stopping:
            return pb.SnapshotAck(ok=False, error="the node is not running")
        return await self.snapshot_inbox.on_chunk(chunk)

    def snapshot_index(self) -> int:
        core = self.core
        return core.snapshot.index if core is not None and core.snapshot is not None else 0

    async def take_snapshot(self) -> SnapshotMeta | None:
        """Snapshot the state machines now (at the applied index); None when one cannot snapshot or the
        applied index is not the commit index yet."""
        self._check_running()
        assert self.core is not None
        return self._take_snapshot(self.core)

    def _can_snapshot(self) -> bool:
        return self.snapshots is not None and all(
            isinstance(sm, SnapshottingStateMachine) for sm in self.state_machines
        )

    def _take_snapshot(self, core: RaftCore) -> SnapshotMeta | None:
        """On the loop thread, between applies (the state machines' contract): write every machine's image
        at the applied index, which must be the commit index (so the configuration at it is known)."""
        snapshots, store = self.snapshots, self.log
        assert snapshots is not None and store is not None
        applied = core.applied
        if core.snapshot is not None and core.snapshot.index >= applied:
            return core.snapshot
        if applied == 0 or applied != core.commit_index or not self._can_snapshot():
            return None
        if any(done != applied for done in self._sm_applied):
            return None  # after an in-place repair the machines are ahead until the leader gives the range back
        meta = SnapshotMeta(applied, store.term_at(applied), core.committed_membership.encode())
        with snapshots.create(meta) as writer:
            write_image(writer, self.state_machines, applied)  # type: ignore[arg-type]
            writer.commit()
        core.set_snapshot(meta)
        self.stats.snapshots_taken += 1
        log.info("snapshot taken at index %d (term %d)", meta.index, meta.term)
        return meta

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """After the persist reset the log to `meta`: restore every state machine from the stored file."""
        snapshots = self.snapshots
        assert snapshots is not None
        if self.state_machines:
            with snapshots.open(meta) as src:
                restore_image(src, self.state_machines, meta.index)
        self._sm_applied = [meta.index] * len(self.state_machines)
        self.stats.snapshots_installed += 1
        log.info("installed the leader's snapshot at index %d (term %d)", meta.index, meta.term)

    def _start_snapshot_send(self, m: InstallSnapshot) -> None:
        running = self._snapshot_sends.get(m.to_id)
        if running is not None and not running.done():
            return  # the core waits for report_snapshot before it asks again
        task = asyncio.get_running_loop().create_task(self._send_snapshot(m), name=f"snapshot-to-{m.to_id}")
        self._snapshot_sends[m.to_id] = task

    async def _send_snapshot(self, m: InstallSnapshot) -> None:
        transport, snapshots = self.transport, self.snapshots
        assert transport is not None and snapshots is not None
        timeout = max(5.0, self.config.rpc_timeout_ms / 1000)

        def send_chunk(chunk: pb.SnapshotChunk) -> Any:
            return transport.send_snapshot_chunk(m.to_id, chunk, timeout)

        ok = await send_snapshot(snapshots, self._io, m, send_chunk, self.config.snapshot_chunk_bytes)
        if ok:
            self.stats.snapshots_sent += 1
        core = self.core
        if core is not None and not self._stopping and self._fenced is None:
            core.report_snapshot(m.to_id, ok)
            self._poke()
