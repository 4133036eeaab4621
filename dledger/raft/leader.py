"""The leader half of `RaftCore`: replication, commit, heartbeats, leadership transfer and reads.

`LeaderMixin` holds the methods that only run while the node leads (plus the two send queues); the state
they use lives in `RaftCore` and is declared below for the type checker. Invariants:
- per follower, `Progress` decides what to send (PROBE: one message at a time; REPLICATE: pipelined up
  to the inflight limits); entries leave before the leader's own write persists (thesis 10.2.1);
- the commit index only moves to an index that a quorum matches and whose term is the current term
  (§5.4.2), and only forward;
- a heartbeat carries min(match, commit) and the current confirmation round (`read_only.py`);
- entries sent in REPLICATE and never acknowledged by the time the follower answers a later message are
  re-sent from the match index (lost messages never stall a follower);
- a transfer sends TimeoutNow only to an up-to-date voter, and disables lease reads for the term;
- quorums count the current voters only (`_voters`, see `conf.py`); entries and heartbeats go to every
  other member (`_others`: voters and learners); a follower whose entries are compacted gets a snapshot
  (`snapshot.py`).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING

from dledger.raft.config import Config, ReadOnlyOption
from dledger.raft.errors import NotLeaderError
from dledger.raft.log import RaftLog
from dledger.raft.messages import AppendEntries, AppendEntriesResponse, Message, TimeoutNow
from dledger.raft.progress import Progress, ProgressState
from dledger.raft.quorum import committed_index
from dledger.raft.read_only import ReadOnly, decode_round
from dledger.raft.ready import ReadState
from dledger.raft.roles import Role

__all__ = ["LeaderMixin"]

_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE


class LeaderMixin:
    """Leader-side behaviour of RaftCore (see the module docstring)."""

    # state owned by RaftCore
    config: Config
    id: str
    group: str
    _others: tuple[str, ...]
    _voters: frozenset[str]
    _solo: bool
    role: Role
    leader_id: str | None
    current_term: int
    election_elapsed: int
    now: int
    log: RaftLog
    progress: dict[str, Progress]
    read_only: ReadOnly
    lead_transferee: str | None
    dropped: Counter[str]
    uncommitted_bytes: int
    _uncommitted: deque[tuple[int, int]]
    _msgs: list[Message]
    _persisted_msgs: list[Message]
    _read_states: list[ReadState]
    _committed_in_term: bool
    _commit_dirty: bool
    _append_dirty: bool
    _lease_disabled: bool

    if TYPE_CHECKING:  # provided by RaftCore's other mixins

        def _send_snapshot(self, to: str, pr: Progress) -> None: ...
        def _conf_fold(self) -> None: ...

    # ---- sending ----

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _send_after_persist(self, m: Message) -> None:
        self._persisted_msgs.append(m)

    def transfer_leadership(self, to: str) -> None:
        """Thesis 3.10: bring `to` up to date, then send it TimeoutNow; aborts after T ticks."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if to not in self._voters:
            raise ValueError(f"{to!r} is not a voter")
        if to == self.id:
            self.lead_transferee = None
            return
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        pr = self.progress[to]
        if pr.match_index == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_appends(to, pr)

    # ---- leader: replication ----

    def _send_appends(self, to: str, pr: Progress) -> None:
        """Send what `to` is missing, as far as the inflight limits allow."""
        log = self.log
        last = log.last_index()
        max_bytes = self.config.max_append_bytes
        max_entries = self.config.max_append_entries
        while not pr.is_paused():
            nxt = pr.next_index
            if nxt > last and pr.state is _REPLICATE:
                return
            prev = nxt - 1
            prev_term = log.term_or_none(prev)
            if prev_term is None:
                self._send_snapshot(to, pr)  # the entries are compacted away
                return
            hi = min(last + 1, nxt + max_entries)
            entries, size = log.entries_sized(nxt, hi, max_bytes) if nxt <= last else ([], 0)
            commit = log.commit_index
            end = prev + len(entries)
            if commit > end:
                commit = end
            self._send(
                AppendEntries(
                    term=self.current_term,
                    from_id=self.id,
                    to_id=to,
                    group=self.group,
                    prev_log_index=prev,
                    prev_log_term=prev_term,
                    leader_commit=log.commit_index,
                    entries=tuple(entries),
                    read_context=self.read_only.context,
                )
            )
            if commit > pr.sent_commit:
                pr.sent_commit = commit
            if entries:
                pr.sent_entries(end, size)
                pr.sent_round = self.read_only.round
            else:
                pr.probe_sent = True
            if pr.state is not _REPLICATE:
                return

    def _broadcast_append(self) -> None:
        progress = self.progress
        for p in self._others:
            self._send_appends(p, progress[p])
        if self._solo:
            self._maybe_commit()

    def _heartbeat(self, to: str, pr: Progress, read_context: bytes) -> AppendEntries:
        match = pr.match_index
        term = self.log.term_or_none(match)
        if term is None:
            match, term = 0, 0
        return AppendEntries(
            term=self.current_term,
            from_id=self.id,
            to_id=to,
            group=self.group,
            prev_log_index=match,
            prev_log_term=term,
            leader_commit=min(match, self.log.commit_index),
            read_context=read_context,
        )

    def _send_heartbeat(self, to: str, pr: Progress) -> None:
        heartbeat = self._heartbeat(to, pr, self.read_only.context)
        if heartbeat.leader_commit > pr.sent_commit:
            pr.sent_commit = heartbeat.leader_commit
        self._send(heartbeat)

    def keepalive(self) -> list[AppendEntries]:
        """Heartbeats for a driver that cannot tick now (it waits on a long write of the current Ready):
        what `_send_heartbeat` sends, but changing nothing (no read round, no commit bookkeeping), so the
        driver may send them in the middle of a Ready. Empty unless this node leads."""
        if self.role is not Role.LEADER:
            return []
        return [self._heartbeat(p, self.progress[p], b"") for p in self._others]

    def _broadcast_heartbeat(self) -> None:
        self.read_only.new_round(self.now)
        for p in self._others:
            self._send_heartbeat(p, self.progress[p])
        if self._solo:
            self._confirm_reads()

    def _notify_commit(self) -> None:
        """Tell followers about a new commit index, once per Ready (coalesced), if nothing else did."""
        self._commit_dirty = False
        commit = self.log.commit_index
        for p in self._others:
            pr = self.progress[p]
            if min(pr.match_index, commit) > pr.sent_commit:
                self._send_heartbeat(p, pr)

    def _handle_append_response(self, m: AppendEntriesResponse) -> None:
        pr = self.progress[m.from_id]
        pr.recent_active = True
        log = self.log
        last = log.last_index()
        round_ = decode_round(m.read_context)
        if round_ is not None and pr.acked_round < round_ <= self.read_only.round:
            pr.acked_round = round_
            if self.read_only.pending or self.config.read_only is ReadOnlyOption.LEASE:
                self._confirm_reads()
        if m.success:
            if m.match_index > last:
                self.dropped["bad_index"] += 1
                return
            if pr.maybe_update(m.match_index):
                if pr.state is _REPLICATE:
                    pr.inflights.free_le(m.match_index)
                elif pr.state is _PROBE:
                    pr.become_replicate()
                self._maybe_commit()
                if m.from_id not in self.progress:
                    return  # the commit completed its removal
                if m.from_id == self.lead_transferee and pr.match_index == log.last_index():
                    self._send_timeout_now(m.from_id)
            if (
                pr.state is _REPLICATE
                and pr.match_index < pr.next_index - 1
                and round_ is not None
                and round_ > pr.sent_round
            ):
                # the peer answered a message sent after our last entries, yet has not acknowledged them:
                # they (or their acknowledgements) were lost. Probe again from the match index.
                pr.become_probe()
            self._send_appends(m.from_id, pr)
            return
        if m.reject_index > last or m.conflict_index > m.reject_index or m.conflict_index < 0:
            self.dropped["bad_index"] += 1
            return
        hint = m.conflict_index
        if m.conflict_term > 0:
            hint = log.find_conflict_by_term(hint, m.conflict_term)
        if pr.maybe_decrease_to(m.reject_index, hint, m.last_log_index):
            if pr.state is _REPLICATE:
                pr.become_probe()
            self._send_appends(m.from_id, pr)

    def _maybe_commit(self) -> None:
        log = self.log
        progress = self.progress
        q = committed_index(progress[p].match_index for p in self._voters)
        if q <= log.commit_index or log.term(q) != self.current_term:
            return  # §5.4.2: never commit a previous term's entry by counting replicas
        log.commit_to(q)
        self._conf_fold()
        self._commit_dirty = True
        unc = self._uncommitted
        while unc and unc[0][0] <= q:
            self.uncommitted_bytes -= unc.popleft()[1]
        if not self._committed_in_term:
            self._committed_in_term = True
            waiting, self.read_only.waiting = self.read_only.waiting, []
            for ctx in waiting:
                self._start_read(ctx)

    def _send_timeout_now(self, to: str) -> None:
        self._lease_disabled = True  # the target may win at any time from now on: no more lease reads
        self._send(TimeoutNow(term=self.current_term, from_id=self.id, to_id=to, group=self.group))

    def _maybe_transfer_to_preferred(self) -> None:
        p = self.config.preferred_leader
        if p is None or p == self.id or self.lead_transferee is not None or not self._committed_in_term:
            return
        if p not in self._voters:
            return
        pr = self.progress[p]
        if pr.recent_active and pr.state is _REPLICATE and pr.match_index >= self.log.commit_index:
            self.transfer_leadership(p)

    # ---- leader: reads (thesis 6.4) ----

    def _lease_valid(self) -> bool:
        start = self.read_only.lease_start
        return (
            not self._lease_disabled
            and self.lead_transferee is None
            and start is not None
            and self.now - start < self.config.election_tick - 1
        )

    def _start_read(self, context: bytes) -> None:
        commit = self.log.commit_index
        if self.config.read_only is ReadOnlyOption.LEASE and self._lease_valid():
            self._read_states.append(ReadState(commit, context))
            return
        ro = self.read_only
        ro.new_round(self.now)
        ro.add_request(commit, context)
        if self._solo:
            self._confirm_reads()
            return
        for p in self._others:
            self._send_heartbeat(p, self.progress[p])

    def _confirm_reads(self) -> None:
        ro = self.read_only
        progress = self.progress
        rounds = [ro.round if p == self.id else progress[p].acked_round for p in self._voters]
        states = ro.confirm(committed_index(rounds))
        if states:
            self._read_states.extend(states)
