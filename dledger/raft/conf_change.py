"""The membership half of `RaftCore`: which configuration is in effect, and single-server changes.

`ConfMixin` tracks the configuration (see `membership.py` for the encoding and the change rules); the state
it uses lives in `RaftCore` and is declared below for the type checker. Rules and invariants:
- in effect = the latest CONFIG entry in the log, committed or not (thesis 4.1); else the configuration in
  effect at the commit index (`HardState.config`, or a snapshot's); else `Membership.initial(peers)`;
- `_conf_base` is the configuration in effect at the commit index and `_conf_base_bytes` its encoding
  (what `HardState.config` carries; b"" while it is the initial one). `_conf_pending` lists the CONFIG
  entries above the commit index, in index order; they fold into the base as the commit index passes them;
- a truncation that removes a pending CONFIG entry rolls the configuration back (`_conf_after_append`);
- start-up reads only the entries above the hard state's commit index, never the whole log;
- quorums (commit, votes, check-quorum, ReadIndex, lease) count the current voters only; the leader keeps
  a `Progress` for every member (voters and learners) and for itself, and also for a node whose removal is
  not committed yet, so that the removed node receives its removal; when the removal commits it gets one
  last heartbeat carrying that commit, so it stops campaigning (a node cut off during its removal may
  never learn it: it keeps asking for votes that every member ignores);
- `propose_conf_change` allows one change in flight (no CONFIG entry above the commit index), only after
  the leader committed an entry of its own term (the single-server-change fix, Ongaro, raft-dev 2015),
  never during a transfer, and promotes only a learner that is recently active and at most
  `Config.promote_max_lag` entries behind;
- a leader that removes itself keeps leading, without counting itself, until the change commits; it then
  steps down (in `ready()`, after telling the followers the commit) and, no longer a voter, never campaigns;
- a node campaigns only if it is a voter of its current configuration, or of the configuration at its
  commit index while a change is pending (its own removal, not yet committed). Without the second case a
  group can lose liveness: a leader of {a, b} appends "remove a" and loses leadership before b gets that
  entry; b (config {a, b}) needs a's vote, which a refuses because its log is longer, and a, not a voter in
  its newest config, would never campaign. Winning with the votes of its current config's voters is safe
  (those majorities intersect the committed config's); such a leader commits, then steps down as above.
"""

from __future__ import annotations

from collections import deque
from operator import attrgetter
from typing import TYPE_CHECKING

from dledger.raft.config import Config
from dledger.raft.errors import ConfChangeError, NotLeaderError
from dledger.raft.log import RaftLog
from dledger.raft.membership import ConfChange, ConfChangeOp, Membership, apply_change, decode_config
from dledger.raft.progress import Progress
from dledger.raft.ready import Proposed
from dledger.raft.roles import Role
from dledger.storage_api import Entry, EntryKind, HardState, SnapshotMeta

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ConfMixin"]

_kind = attrgetter("kind")
_SCAN_BYTES = 4 << 20


def _configs_in(entries: Sequence[Entry]) -> list[tuple[int, Membership]]:
    """The CONFIG entries of `entries` as (index, membership); the common case (none) runs in C."""
    if EntryKind.CONFIG not in map(_kind, entries):
        return []
    return [(e.index, Membership.decode(e.data)) for e in entries if e.kind is EntryKind.CONFIG]


class ConfMixin:
    """Membership tracking and changes of RaftCore (see the module docstring)."""

    # state owned by RaftCore
    config: Config
    id: str
    role: Role
    leader_id: str | None
    current_term: int
    log: RaftLog
    progress: dict[str, Progress]
    lead_transferee: str | None
    uncommitted_bytes: int
    _uncommitted: deque[tuple[int, int]]
    _committed_in_term: bool
    _append_dirty: bool
    _conf_base: Membership
    _conf_base_bytes: bytes
    _conf_base_index: int
    _conf_pending: list[tuple[int, Membership]]
    _voters: frozenset[str]
    _members: frozenset[str]
    _others: tuple[str, ...]
    _solo: bool

    if TYPE_CHECKING:  # provided by LeaderMixin

        def _send_heartbeat(self, to: str, pr: Progress) -> None: ...

    # ---- views ----

    @property
    def membership(self) -> Membership:
        """The configuration in effect: the latest CONFIG entry in the log, committed or not."""
        pending = self._conf_pending
        return pending[-1][1] if pending else self._conf_base

    @property
    def committed_membership(self) -> Membership:
        """The configuration in effect at the commit index (what `hard_state.config` encodes)."""
        return self._conf_base

    def is_voter(self) -> bool:
        return self.id in self._voters

    # ---- tracking ----

    def _init_membership(self, hs: HardState) -> None:
        self._conf_base = decode_config(hs.config, self.config.peers)
        self._conf_base_bytes = hs.config
        self._conf_pending = []
        log = self.log
        lo = max(hs.commit_index + 1, log.first_index())
        hi = log.last_index() + 1
        while lo < hi:
            chunk = log.entries(lo, hi, _SCAN_BYTES)
            self._conf_pending += _configs_in(chunk)
            lo = chunk[-1].index + 1
        self._conf_fold()
        # below first_index the log was replaced by a snapshot the driver reports with set_snapshot()
        self._conf_base_index = hs.commit_index if log.first_index() - 1 > hs.commit_index else log.commit_index
        self._membership_changed()

    def _conf_fold(self) -> None:
        """The commit index moved forward: CONFIG entries at or below it now form the base."""
        commit = self.log.commit_index
        self._conf_base_index = commit
        pending = self._conf_pending
        if not pending or pending[0][0] > commit:
            return
        while pending and pending[0][0] <= commit:
            _, self._conf_base = pending.pop(0)
        self._conf_base_bytes = self._conf_base.encode()
        self._membership_changed()

    def _conf_after_append(self, prev: int, last_new: int, entries: Sequence[Entry]) -> None:
        """A follower's log now equals `entries` on (prev, last_new] and was cut after last_new if they
        conflicted: pending CONFIG entries there are replaced, those past the new end are rolled back."""
        pending = self._conf_pending
        new = _configs_in(entries)
        if not new and (not pending or pending[-1][0] <= prev):
            return
        end = self.log.last_index()
        kept = [p for p in pending if p[0] <= prev]
        later = [p for p in pending if last_new < p[0] <= end]
        before = self.membership
        self._conf_pending = kept + new + later
        if self.membership is not before:
            self._membership_changed()

    def _conf_restore(self, meta: SnapshotMeta) -> None:
        """The log was replaced by a snapshot: its configuration is the one in effect."""
        self._conf_base = decode_config(meta.config, self.config.peers)
        self._conf_base_bytes = meta.config
        self._conf_base_index = meta.index
        self._conf_pending = []
        self._membership_changed()

    def _conf_rebase(self, meta: SnapshotMeta) -> None:
        """Start-up with a log that begins after a snapshot newer than the hard state's configuration."""
        if meta.index <= self._conf_base_index:
            return
        self._conf_base = decode_config(meta.config, self.config.peers)
        self._conf_base_bytes = meta.config
        self._conf_pending = [p for p in self._conf_pending if p[0] > meta.index]
        self._conf_fold()
        self._membership_changed()

    def _membership_changed(self) -> None:
        m = self.membership
        self._voters = frozenset(m.voters)
        self._members = m.members | self._conf_base.members  # with a node whose removal is in flight
        self._others = tuple(sorted(self._members - {self.id}))
        self._solo = self._voters == {self.id}
        if self.role is Role.LEADER:
            self._sync_progress()

    def _sync_progress(self) -> None:
        """The leader tracks every member (and itself); a new member is probed from the end of the log."""
        progress = self.progress
        for p in [p for p in progress if p != self.id and p not in self._members]:
            self._send_heartbeat(p, progress.pop(p))  # a last word: the commit that completed its removal
        nxt = self.log.last_index() + 1
        cfg = self.config
        for p in self._others:
            if p not in progress:
                progress[p] = Progress(nxt, cfg.max_inflight_msgs, cfg.max_inflight_bytes)

    def _can_campaign(self) -> bool:
        me = self.id
        return me in self._voters or (bool(self._conf_pending) and self._conf_base.is_voter(me))

    def _removed_leader_done(self) -> bool:
        """A leader that removed itself steps down once that change committed."""
        return self.role is Role.LEADER and self.id not in self._voters and not self._conf_pending

    # ---- changing ----

    def propose_conf_change(self, change: ConfChange) -> Proposed:
        """Append a CONFIG entry for one single-server change (leader only; rules in the module docstring).
        Raises NotLeaderError, or ConfChangeError with a `reason`."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.lead_transferee is not None:
            raise ConfChangeError("transferring")
        if not self._committed_in_term:
            raise ConfChangeError("the leader has not committed an entry of its term yet")
        if self._conf_pending:
            raise ConfChangeError(f"a configuration change is in flight (index {self._conf_pending[-1][0]})")
        new = apply_change(self.membership, change)
        last = self.log.last_index()
        if change.op is ConfChangeOp.PROMOTE:
            pr = self.progress.get(change.node_id)
            if pr is None or not pr.recent_active or pr.match_index + self.config.promote_max_lag < last:
                match = pr.match_index if pr else 0
                raise ConfChangeError(f"{change.node_id} is not caught up (match {match}, last {last})")
        data = new.encode()
        index = last + 1
        term = self.current_term
        self.log.append([Entry(index, term, data, EntryKind.CONFIG)])
        self._uncommitted.append((index, len(data)))
        self.uncommitted_bytes += len(data)
        self._conf_pending.append((index, new))
        self._membership_changed()
        self._append_dirty = True
        return Proposed(index, index, term)
