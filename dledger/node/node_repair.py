"""In-place repair of a running `RaftNode`'s storage, and the end of its recovering state.

A node that starts recovering (`startup.recovering_start`: its log lost entries it had persisted) grants no
vote and never campaigns until its log reaches the recovering mark again; `_end_recovering` clears it.

While running, damage is found by a read (a corrupt entry or index record read for a follower's
AppendEntries, for an apply, for a snapshot's term, or for a client `get`) or by a flush or append (a
segment file deleted or cut under the open log, which poisons it). The node then recovers **in place**, through the very
path a restart takes, without a restart:

1. it stops taking part: the old core is dropped (a leader thereby stops leading: its followers elect
   another after an election timeout), its clients hear "not leader" (refused) or "outcome unknown"
   (proposed), and its role callbacks hear `follower`;
2. on the I/O thread: the hard state (term, vote, commit) is saved, the log is closed and opened again
   with every entry checked (`startup.open_log`): index records that disagree with their data are
   rebuilt from the data, the log is cut back before the first damaged or missing entry,
   and the recovering mark (the larger of the saved commit index, the durable damage and the last entry
   this run had persisted, so possibly acknowledged) is saved in the hard-state store before the new core
   exists;
3. a new core is built on the reopened log, recovering when entries were lost: it takes them again from
   the leader like any follower, and votes again once its log, persisted, reaches the mark. Its applied
   index is what every state machine applied: entries given back by the leader that a state machine had
   applied already are skipped (`RaftNode._apply` applies only past each machine's own index), so nothing
   is applied twice or skipped; no snapshot is taken while a state machine is ahead of the core.

Invariants:
- a damaged log is never read again: the old `SegmentedLog` is closed before the new one is opened, and
  readers meanwhile (`get`) hear "not leader" and ask another replica;
- the recovering mark is durable before the new core can answer anyone, so a crash mid-repair restarts
  recovering too; while the term of the last entry this run had persisted is known, the recovering core
  answers votes as that undamaged log would have (`Config.recovering_term`), which keeps a group whose
  other replica is also recovering live;
- a repair that cannot be done (the store refuses to open, the hard state cannot be saved) or that does
  not hold (`MAX_REPAIRS` within `REPAIR_WINDOW` seconds) fences the node with one line naming the error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dledger.commitlog import (
    CorruptEntryError,
    CorruptStoreError,
    HardStateCorruptError,
    HardStateStore,
    LogClosedError,
    RecoveryRefusedError,
    SegmentedLog,
)
from dledger.node.errors import LeaderHint, NodeNotLeaderError, NodeOutcomeUnknownError
from dledger.node.startup import REPLACE_STORE_HINT, core_config, open_log, recovering_start
from dledger.raft import RaftCore, Role
from dledger.storage_api import Entry, HardState, SnapshotMeta

if TYPE_CHECKING:
    from dledger.node.config import NodeConfig
    from dledger.node.node_snapshots import Snapshots

__all__ = ["MAX_REPAIRS", "REPAIR_WINDOW", "RepairMixin", "storage_damage"]

log = logging.getLogger("dledger.node.node")

MAX_REPAIRS = 3  # in-place repairs allowed within REPAIR_WINDOW seconds before the node fences itself
REPAIR_WINDOW = 60.0


def storage_damage(exc: BaseException) -> BaseException | None:
    """The storage damage behind `exc` that an in-place repair can recover from, or None: a corrupt entry or
    index record, or a log poisoned because a segment file was deleted or cut under it. Failed fsyncs and
    other I/O errors are not damage of this kind (after a failed fsync nothing written can be trusted)."""
    if isinstance(exc, CorruptEntryError):
        return exc
    cause = exc.__cause__ if isinstance(exc, LogClosedError) else exc
    if isinstance(cause, CorruptStoreError) and not isinstance(cause, HardStateCorruptError | RecoveryRefusedError):
        return cause
    return None


class RepairMixin:
    """In-place repair and the end of recovering, for `RaftNode` (see the module docstring)."""

    # state owned by RaftNode
    config: NodeConfig
    stats: Any
    core: RaftCore | None
    log: SegmentedLog | None
    hard_state_store: HardStateStore | None
    snapshots: Snapshots
    _io: ThreadPoolExecutor
    _sm_applied: list[int]
    _recovering_mark: int
    _seed: int
    _stopping: bool

    if TYPE_CHECKING:

        async def _drive(self) -> None: ...
        def _fence(self, exc: BaseException) -> None: ...
        def _save_hard_state(self, hs: HardState, *, force: bool = False) -> None: ...
        def _fail_all(self, refused: Exception, unknown: Exception) -> None: ...
        def _on_soft_state(self, core: RaftCore) -> None: ...
        def _on_membership(self, core: RaftCore) -> None: ...
        def _poke(self) -> None: ...

    def _init_repair(self) -> None:
        self._damage: BaseException | None = None  # damage a reader found, for the driver to repair
        self._repairing = False
        self._repair_times: list[float] = []

    async def _run(self) -> None:
        """Drive the core (`RaftNode._drive`); storage damage found meanwhile is repaired in place, then the
        new core is driven. Any other error, or a repair that fails, fences the node."""
        while not self._stopping:
            try:
                await self._drive()
            except Exception as exc:  # storage or an invariant: repair or fence, never go on half-broken
                damage = storage_damage(exc)
                if damage is None or self._stopping:
                    self._fence(exc)
                    return
                try:
                    await self._repair(damage)
                except Exception as failed:
                    self._fence(failed)
                    return

    async def _end_recovering(self, core: RaftCore) -> None:
        """The core has its lost range again, persisted: clear the durable mark (off the loop thread)."""
        target, self._recovering_mark = self._recovering_mark, 0
        store = self.hard_state_store
        assert store is not None
        log.warning(
            "node %s RECOVERED: its log reaches %d again (last index %d); it votes again",
            self.config.self_id, target, core.last_index,
        )  # fmt: skip
        await asyncio.get_running_loop().run_in_executor(self._io, store.save_recovering_until, 0)

    def _read_entry(self, index: int) -> Entry:
        """Entry `index` from the log for a client `get`. Damage met here is handed to the driver to repair,
        and the client hears "not leader" (with no hint: another replica answers meanwhile)."""
        store = self.log
        if self._repairing or store is None:
            raise NodeNotLeaderError(LeaderHint(), "this node is repairing its log")
        try:
            return store.read(index, index + 1)[0]
        except (CorruptEntryError, LogClosedError) as exc:
            if storage_damage(exc) is None:
                raise
            if self._damage is None:
                self._damage = exc
                self._poke()
            raise NodeNotLeaderError(LeaderHint(), f"this node found damaged storage: {exc}") from None

    def _take_damage(self) -> None:
        """Raise, in the driver, the damage a reader reported (the driver then repairs it)."""
        damage, self._damage = self._damage, None
        if damage is not None:
            raise damage

    async def _repair(self, damage: BaseException) -> None:
        """Recover in place from `damage` (module docstring). Raises when it cannot: the caller fences."""
        old = self.core
        assert old is not None
        now = time.monotonic()
        self._repair_times = [t for t in self._repair_times if now - t < REPAIR_WINDOW] + [now]
        if len(self._repair_times) > MAX_REPAIRS:
            raise CorruptStoreError(
                f"storage damage found again after {MAX_REPAIRS} in-place repairs within {REPAIR_WINDOW:.0f} s"
                f" ({damage}); {REPLACE_STORE_HINT}"
            )
        self._repairing = True
        try:
            hs = old.hard_state
            lost_last = old.log.stable_last_index()
            lost_term = _term_or_zero(old, lost_last)
            log.error(
                "node %s found damaged storage while running (%s): it stops %s and repairs its log in place",
                self.config.self_id, damage, "leading" if old.role is Role.LEADER else "voting",
            )  # fmt: skip
            self._fail_all(
                NodeNotLeaderError(LeaderHint(), "this node found damaged storage and stepped down"),
                NodeOutcomeUnknownError(f"this node found damaged storage before the entries were committed: {damage}"),
            )
            applied = min(self._sm_applied, default=old.applied)
            latest, target = await asyncio.get_running_loop().run_in_executor(
                self._io, self._reopen_storage, hs, applied, lost_last, f"damage found while running ({damage})"
            )
            store = self.log
            assert store is not None
            commit = max(hs.commit_index, applied, latest.index if latest is not None else 0)
            tip_term = lost_term if target and target == lost_last else 0
            core = RaftCore(
                core_config(self.config, applied, target, tip_term),
                store,
                HardState(hs.current_term, hs.voted_for, commit, hs.config),
                random.Random(self._seed + len(self._repair_times)),
            )
            if latest is not None:
                core.set_snapshot(latest)
            self.core = core
            self._recovering_mark = target
            self.stats.repairs += 1
            if not target:
                log.warning(
                    "node %s repaired its log in place: nothing it had persisted was lost (last index %d)",
                    self.config.self_id, store.last_index,
                )  # fmt: skip
            self._on_soft_state(core)
            self._on_membership(core)
        finally:
            self._repairing = False

    def _reopen_storage(
        self, hs: HardState, applied: int, lost_last: int, cause: str
    ) -> tuple[SnapshotMeta | None, int]:
        """On the I/O thread: save the hard state, close the damaged log, open it again (every entry checked,
        bad index records rebuilt, damaged entries cut), and save the recovering mark. Returns the latest
        snapshot and the recovering target (0: nothing persisted was lost)."""
        self._save_hard_state(hs, force=True)
        old, hs_store = self.log, self.hard_state_store
        assert hs_store is not None
        if old is not None:
            try:
                old.close()
            except Exception as exc:  # a poisoned log may fail its last flush: its files are reopened anyway
                log.warning("closing the damaged log: %s", exc)
        self.log = store = open_log(self.config)
        latest = self.snapshots.recover(store)
        commit = max(hs.commit_index, applied, latest.index if latest is not None else 0)
        target = recovering_start(store, hs_store, commit, self.config.self_id, lost_last=lost_last, cause=cause)
        return latest, target


def _term_or_zero(core: RaftCore, index: int) -> int:
    """The term of entry `index` in `core`'s log, or 0 when it cannot be read (the log is damaged)."""
    try:
        return core.log.term(index)
    except Exception:
        return 0
