"""The snapshot half of `RaftCore` (thesis chapter 5, paper §7): metadata only; the runtime moves the bytes.

`SnapshotMixin` holds both sides; the state it uses lives in `RaftCore` (declared below for the type
checker). Rules and invariants:
- the driver reports the newest snapshot it stored with `set_snapshot(meta)` (at start, before anything
  else, and after taking one) and only then compacts the log below `meta.index + 1`; `meta.index` is at
  most the commit index;
- leader: a follower whose next entries are compacted gets `InstallSnapshot` for the latest snapshot and
  its Progress goes to SNAPSHOT (nothing else is sent to it) until `report_snapshot(peer, success)`:
  failure -> PROBE, paused until the next heartbeat answer (then it retries); success -> PROBE from past
  the snapshot, paused until the follower answers. A successful `InstallSnapshotResponse` moves the
  follower's match index to its `last_index` and resumes replication;
- follower (the driver steps InstallSnapshot in only once the whole snapshot is stored locally): a stale
  term is rejected; a snapshot at or below the commit index changes nothing; a snapshot whose last entry
  the log holds (same index and term) commits up to it and keeps the log, whose entries the state machine
  then applies as usual (no restore needed); otherwise the log is replaced: `Ready.snapshot` asks the
  driver to restore the state machine and reset the log, after which commit == applied == the snapshot's
  index and the configuration is the snapshot's. Every success answer goes after the persist;
- committed entries handed out are always above an installed snapshot (`RaftLog` hands none out while a
  snapshot is pending).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from dledger.raft.config import Config
from dledger.raft.log import RaftLog
from dledger.raft.membership import decode_config
from dledger.raft.messages import InstallSnapshot, InstallSnapshotResponse, Message
from dledger.raft.progress import Progress, ProgressState
from dledger.raft.roles import Role
from dledger.storage_api import SnapshotMeta

__all__ = ["SnapshotMixin"]


class SnapshotMixin:
    """Snapshot sending and installing of RaftCore (see the module docstring)."""

    # state owned by RaftCore
    config: Config
    id: str
    group: str
    role: Role
    current_term: int
    log: RaftLog
    progress: dict[str, Progress]
    dropped: Counter[str]
    snapshot: SnapshotMeta | None

    if TYPE_CHECKING:  # provided by RaftCore's other mixins

        def _send(self, m: Message) -> None: ...
        def _send_after_persist(self, m: Message) -> None: ...
        def _send_appends(self, to: str, pr: Progress) -> None: ...
        def _maybe_commit(self) -> None: ...
        def _conf_fold(self) -> None: ...
        def _conf_restore(self, meta: SnapshotMeta) -> None: ...
        def _conf_rebase(self, meta: SnapshotMeta) -> None: ...

    # ---- driver inputs ----

    def set_snapshot(self, meta: SnapshotMeta) -> None:
        """The driver stored a snapshot covering entries up to `meta.index` (at start: the one it has)."""
        if meta.index > self.log.commit_index:
            raise ValueError(f"snapshot at {meta.index} is past the commit index {self.log.commit_index}")
        decode_config(meta.config, self.config.peers)  # a bad config raises ValueError here, not later
        if self.snapshot is None or meta.index > self.snapshot.index:
            self.snapshot = meta
        self._conf_rebase(meta)

    def report_snapshot(self, peer_id: str, success: bool) -> None:
        """The runtime finished (or gave up) streaming the snapshot the core asked to send to `peer_id`."""
        if self.role is not Role.LEADER:
            return
        pr = self.progress.get(peer_id)
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = 0  # probe from the match index again: it will ask for a snapshot again
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's answer (or, after a failure, the next heartbeat's)

    # ---- leader ----

    def _send_snapshot(self, to: str, pr: Progress) -> None:
        """`to` needs entries that are compacted away: send the latest snapshot instead."""
        snap = self.snapshot
        if snap is None:
            self.dropped["no_snapshot"] += 1  # the driver compacted without reporting a snapshot
            pr.probe_sent = True
            return
        self._send(
            InstallSnapshot(
                term=self.current_term,
                from_id=self.id,
                to_id=to,
                group=self.group,
                last_included_index=snap.index,
                last_included_term=snap.term,
                config=snap.config,
            )
        )
        pr.become_snapshot(snap.index)

    def _handle_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        pr = self.progress[m.from_id]
        pr.recent_active = True
        if not m.success:
            if pr.state is ProgressState.SNAPSHOT:
                pr.pending_snapshot = 0
                pr.become_probe()
            return
        if m.last_index > self.log.last_index() or m.last_index < 0:
            self.dropped["bad_index"] += 1
            return
        grew = pr.maybe_update(m.last_index)
        if pr.state is ProgressState.SNAPSHOT:
            if pr.match_index < pr.pending_snapshot:
                return  # an answer about an older snapshot: keep waiting for this one
            pr.become_replicate()
        elif pr.state is ProgressState.PROBE and grew:
            pr.become_replicate()
        if grew:
            self._maybe_commit()
            if m.from_id not in self.progress:
                return  # the commit completed its removal
        self._send_appends(m.from_id, pr)

    # ---- follower ----

    def _snapshot_garbage(self, m: InstallSnapshot) -> str | None:
        """Why `m` is malformed (a `dropped` reason), or None: checked before the term is handled."""
        index, term = m.last_included_index, m.last_included_term
        if index < 0 or term < 0 or term > m.term or (index == 0) != (term == 0):
            return "bad_index"
        try:
            decode_config(m.config, self.config.peers)
        except ValueError:
            return "bad_config"
        return None

    def _handle_install_snapshot(self, m: InstallSnapshot) -> None:
        index, term = m.last_included_index, m.last_included_term
        log = self.log
        if index <= log.commit_index:
            match = log.commit_index  # nothing to do: we hold more than the snapshot, all committed
        elif log.match_term(index, term):
            log.commit_to(index)  # we hold its last entry: keep our log, apply its entries as usual
            self._conf_fold()
            match = index
        else:
            meta = SnapshotMeta(index, term, m.config)
            log.restore(meta)
            self._conf_restore(meta)
            match = index
        self._send_after_persist(
            InstallSnapshotResponse(
                term=self.current_term,
                from_id=self.id,
                to_id=m.from_id,
                group=self.group,
                success=True,
                last_index=match,
            )
        )
