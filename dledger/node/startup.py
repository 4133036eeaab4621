"""What a node does with its stores before its driver starts: open the log, load the hard state, decide
whether it starts recovering, and the settings of its `RaftCore`.

Invariants: a store the node must not start on (a corrupt log or hard state record, a missing hard state
record beside a log or snapshot) is refused with `RecoveryRefusedError`, one line naming the documented
recovery (`REPLACE_STORE_HINT`); a recovering mark is saved durably before the core starts, so a restart
before the lost entries are back keeps it.
"""

from __future__ import annotations

import logging

from dledger.commitlog import (
    CorruptStoreError,
    HardStateCorruptError,
    HardStateStore,
    RecoveryRefusedError,
    SegmentedLog,
    SnapshotStore,
)
from dledger.node.config import NodeConfig
from dledger.raft import Config, ReadOnlyOption
from dledger.storage_api import HardState

__all__ = ["MAX_INFLIGHT_BYTES", "REPLACE_STORE_HINT", "core_config", "load_hard_state", "open_log", "recovering_start"]

log = logging.getLogger("dledger.node.node")

# the documented recovery for a store a node must not start on (docs/durability.md, "Replacing a disk")
REPLACE_STORE_HINT = (
    "recover this node as a replaced disk: `dledger member remove ID`, move the store aside, start the node with"
    " --join and `dledger member add` / `promote` it (docs/durability.md)"
)
# payload bytes in flight to one follower: enough to keep a catching-up follower's link busy, little enough
# that the transport and gRPC do not buffer hundreds of MB (docs/benchmarks.md)
MAX_INFLIGHT_BYTES = 8 << 20


def open_log(cfg: NodeConfig) -> SegmentedLog:
    """The node's log, every entry checked at start; a corrupt store is refused with the recovery hint."""
    try:
        return SegmentedLog.open(
            cfg.store_dir / "log",
            segment_bytes=cfg.segment_bytes,
            drop_behind_bytes=cfg.drop_behind_bytes,
            flush=cfg.flush,
            flush_interval_ms=cfg.flush_interval_ms,
            max_entry_bytes=max(cfg.max_entry_bytes + 48, 4096),
            # every entry checked at start: damage anywhere is found now, and recovered from the leader
            verify_closed=True,
        )
    except CorruptStoreError as exc:
        if isinstance(exc, RecoveryRefusedError):
            raise
        raise RecoveryRefusedError(f"refusing to start: {exc}; {REPLACE_STORE_HINT}") from exc


def load_hard_state(store: HardStateStore, log_store: SegmentedLog, snapshots: SnapshotStore) -> HardState:
    """The saved hard state, refusing (`RecoveryRefusedError`, one line) a record that fails its CRC or a
    missing one beside a log or snapshot: starting at term 0 with no vote could vote twice in a term.
    A brand-new store gets its (zero) record at once, so that a missing record always means damage."""
    try:
        saved = store.load()
    except HardStateCorruptError as exc:
        raise RecoveryRefusedError(f"refusing to start: {exc}; {REPLACE_STORE_HINT}") from exc
    if store.exists():
        return saved
    latest = snapshots.latest()
    if log_store.last_index > 0 or latest is not None:
        what = f"a log up to index {log_store.last_index}" if log_store.last_index else f"snapshot {latest}"
        raise RecoveryRefusedError(
            f"refusing to start: {store.directory}: no hard state record (term, vote, commit) beside {what};"
            f" {REPLACE_STORE_HINT}"
        )
    store.save(saved)
    return saved


def recovering_start(
    store: SegmentedLog, hs_store: HardStateStore, commit: int, self_id: str, *, lost_last: int = 0, cause: str = ""
) -> int:
    """Whether this node starts recovering (see `RaftCore`): the index its log must reach again before it
    votes, or 0. It recovers when its log ends below its commit index, below where recovery found
    corruption of durable entries (`RecoveryReport.durable_damage`), below a mark an earlier run left, or
    (an in-place repair, see node_repair) below `lost_last`, the last entry it had persisted before `cause`.
    The mark is saved durably before the core starts, so a restart before the entries are back keeps it."""
    try:
        mark = hs_store.load_recovering_until()
    except HardStateCorruptError as exc:
        raise RecoveryRefusedError(f"refusing to start: {exc}; {REPLACE_STORE_HINT}") from exc
    damage = store.recovery.durable_damage
    target = max(mark, commit, lost_last, damage[1] if damage is not None else 0)
    last = store.last_index
    if target <= last:
        if mark:
            hs_store.save_recovering_until(0)
        return 0
    if target != mark:
        hs_store.save_recovering_until(target)
    why = (
        f"entries {damage[0]}..{damage[1]} it had fsynced were damaged"
        if damage is not None
        else f"{cause} cost entries it had persisted"
        if cause
        else f"its log ends below its saved commit index {commit}"
        if commit > last
        else "an earlier run had not finished recovering"
    )
    log.error(
        "node %s starts RECOVERING: %s; its log ends at %d. It grants no vote and never campaigns until it has"
        " entries %d..%d again from the leader",
        self_id, why, last, last + 1, target,
    )  # fmt: skip
    return target


def core_config(cfg: NodeConfig, applied: int, recovering_until: int, recovering_term: int = 0) -> Config:
    """The core's settings from the node's (`recovering_term`: see `Config`; known only after a repair)."""
    # a joining node is not one of the initial voters: they are the others it was given
    initial = tuple(p for p in cfg.peers if not (cfg.join and p == cfg.self_id))
    return Config(
        id=cfg.self_id,
        peers=initial,
        election_tick=cfg.election_tick,
        heartbeat_tick=cfg.heartbeat_tick,
        pre_vote=cfg.pre_vote,
        check_quorum=cfg.check_quorum,
        read_only=ReadOnlyOption.LEASE if cfg.lease_read else ReadOnlyOption.READ_INDEX,
        max_append_bytes=min(1 << 20, cfg.max_message_bytes // 4),
        max_inflight_bytes=MAX_INFLIGHT_BYTES,
        max_uncommitted_bytes=max(64 << 20, 4 * cfg.max_entry_bytes),
        preferred_leader=cfg.preferred_leader,
        lazy_commit=cfg.lazy_commit,
        group=cfg.group,
        applied=applied,
        join=cfg.join,
        recovering_until=recovering_until,
        recovering_term=recovering_term,
    )
