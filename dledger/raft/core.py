"""`RaftCore`: the deterministic, sans-I/O Raft state machine (etcd's raft.go + rawnode.go, our own code).

Inputs: `step(message)`, `tick()`, `propose(data)` / `propose_batch(datas)`, `read_index(context)`,
`transfer_leadership(to)`, `propose_conf_change(change)` (`conf.py`), `set_snapshot(meta)` and
`report_snapshot(peer, success)` (`snapshot.py`). Output: `ready()` -> `Ready`, acknowledged by
`advance(ready)` (the persist contract is in `ready.py`: the driver, never the core, writes LogStorage and
the hard state).

Rules of the state machine:
- `step` validates the envelope (group, addressee, sender), handles the term once (§5.1: a higher
  term makes us a follower, except pre-vote traffic and vote requests ignored under a leader lease), then
  dispatches to `_step_leader` / `_step_candidate` / `_step_follower`. Only `_become_*` changes the role.
- `_send` / `_send_after_persist` only queue; nothing leaves before the driver takes a Ready.
- Anything from outside that is malformed, stale or misaddressed is dropped and counted in `dropped`;
  a broken internal invariant raises `RaftInvariantError`.
- Elections: randomized timeout in [T, 2T); pre-vote (thesis 9.6); a no-op opens every term; a node that
  heard from a leader less than T ticks ago (with lease reads: or started less than T ticks ago) ignores
  vote requests unless they carry the transfer flag; with check-quorum a leader also ignores them, and
  steps down when it has not heard from a quorum within T ticks. Only a campaign restarts the election
  timer: a node that may not campaign (a learner, a removed or joining node) keeps counting, so T ticks
  after it last heard from a leader it answers votes again (as etcd's `tickElection`). Were its timer
  to restart too, a timeout drawn equal to T would keep it "in lease" forever, and a candidate that
  needs its vote (a learner its newer configuration promoted) would never win.
- Replication: the leader sends before its own write persists (thesis 10.2.1) and counts itself only up
  to its stable index; commit needs a quorum of match indexes and an entry of the current term (§5.4.2).
  The leader-only methods (replication, commit, heartbeats, transfer, reads) live in `leader.py`.
- A follower accepts entries only after the consistency check, and never sets its commit index past the
  last entry it knows matches the leader: entries past it may still be replaced, so committing them could
  apply an entry the leader never had.
- Senders: messages from ourselves are dropped. Leader traffic (AppendEntries, InstallSnapshot, TimeoutNow)
  is accepted from any sender, member or not: a joining node knows no configuration naming the leader yet,
  and a node lagging behind a configuration change must hear from a leader added since (as in etcd, the
  term rules alone decide; the runtime's transport only admits nodes of the group). Everything else
  (vote requests, pre-votes, responses) is accepted only from members (voters or learners) of our current
  configuration: a removed server that never learnt of its removal cannot disrupt the group with its
  higher terms (thesis 4.2.3), while a learner that a candidate's newer configuration promoted is still
  answered. A vote is answered by the usual rules whatever our own status (the candidate's configuration may
  be newer than ours); only a candidate's own voters are counted. The one exception: a joining node that no
  configuration in its log names yet never votes (its store is new, maybe a wiped one re-added under its
  old id, and a stale candidate whose old configuration lists that id would count an empty log's vote).
  Once a configuration names it, its log holds the committed removal of any earlier incarnation, so the
  up-to-date check refuses every candidate that could still count it. Its appends are guarded by its term,
  not here: the runtime starts a joining node at a term its group's leader confirmed after the removal
  (`dledger.node.join_term`), so a stale leader that still lists the old store as a voter is refused.
- Recovering (protocol-aware recovery, after Alagappan et al., FAST 2018): a replica whose storage lost
  entries it had persisted (`Config.recovering_until`; or its log ends below its saved commit index or
  below what its state machine applied) may have acknowledged them, and so counted in the quorum that
  committed them: with a shorter log it could vote for a candidate that lacks them. Until its stable log
  reaches `recovering_until` again (entries from the leader, or a snapshot, persisted by the driver) it
  grants no vote or pre-vote, never campaigns (timeout or TimeoutNow), and so is counted in no election;
  it takes AppendEntries and InstallSnapshot as any follower. One exception, when the driver knows the
  term of the last lost entry (`Config.recovering_term`): it answers votes as its undamaged log would
  have (the usual rules, with the candidate also at least as up-to-date as that lost tip), which is as
  strict as Raft's own check on the log it had, and keeps a group that needs its vote live. Once
  recovered it is an ordinary voter: its log is a prefix of a leader's that reaches past everything it
  had acknowledged. The driver must keep
  `recovering_until` durable until `recovering_until` reads 0 (a restart meanwhile must not forget it).
- Only a voter campaigns (on timeout or TimeoutNow): a voter of its current configuration, or a node whose
  removal is in its log but not committed (see `ConfMixin._can_campaign`); learners, removed nodes and
  joining nodes never do. Votes are counted among the voters of the candidate's current configuration.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import fields
from typing import Protocol

from dledger.raft.conf_change import ConfMixin
from dledger.raft.config import Config, ReadOnlyOption
from dledger.raft.errors import NotLeaderError, ProposalDroppedError, RaftInvariantError
from dledger.raft.leader import LeaderMixin
from dledger.raft.log import RaftLog, make_entries
from dledger.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    well_formed,
)
from dledger.raft.progress import Progress, ProgressState
from dledger.raft.quorum import VoteResult, majority, vote_result
from dledger.raft.read_only import ReadOnly
from dledger.raft.ready import Proposed, ReadState, Ready, SoftState
from dledger.raft.roles import Role
from dledger.raft.snapshot import SnapshotMixin
from dledger.storage_api import Entry, EntryKind, HardState, LogStorage, SnapshotMeta

__all__ = ["Proposed", "RaftCore", "RandomSource", "Role"]

_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
# what `RaftCore._hard_state_changed` compares, field by field: a new HardState field must be added there
_HARD_STATE_FIELDS = ("current_term", "voted_for", "commit_index", "config")
assert tuple(f.name for f in fields(HardState)) == _HARD_STATE_FIELDS


class RandomSource(Protocol):
    """What the core needs of `random.Random` (injected, seeded by the caller)."""

    def randrange(self, start: int, stop: int, /) -> int: ...


class RaftCore(LeaderMixin, ConfMixin, SnapshotMixin):
    """One Raft replica's protocol state. Not thread-safe: one caller drives it.

    Public API: `step`, `tick`, `propose`, `propose_batch`, `read_index`, `transfer_leadership`
    (in `LeaderMixin`), `propose_conf_change` (in `ConfMixin`), `set_snapshot`, `report_snapshot` (in
    `SnapshotMixin`), `has_ready`, `ready`, `advance`; views `role`, `current_term`, `voted_for`,
    `leader_id`, `commit_index`, `applied`, `last_index`, `hard_state`, `membership`, `snapshot`,
    `progress`, `dropped`, `recovering_until` (0 unless recovering).
    """

    def __init__(self, config: Config, log: LogStorage, hard_state: HardState, rng: RandomSource) -> None:
        self.config = config
        self.id = config.id
        self.group = config.group
        self._rng = rng
        last = log.last_index
        # recovering (module docstring): the log lost entries this replica had persisted, or is shorter than
        # its saved commit index or what its state machine applied; the core starts at what the log holds
        target = max(config.recovering_until, hard_state.commit_index, config.applied)
        self.recovering_until = target if target > last else 0
        # the tip of the log before the damage, when known: votes are answered against it (see Config)
        self._recovering_tip = (config.recovering_term, config.recovering_until) if config.recovering_term else None
        self.log = RaftLog(log, min(hard_state.commit_index, last), min(config.applied, last))
        # the saved commit index stays the floor of the one the core saves: never write it back down
        self._commit_floor = hard_state.commit_index
        self.current_term = hard_state.current_term
        self.voted_for = hard_state.voted_for
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.now = 0  # ticks since this core started
        self.dropped: Counter[str] = Counter()
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.lead_transferee: str | None = None
        self.read_only = ReadOnly()
        self._msgs: list[Message] = []
        self._persisted_msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._uncommitted: deque[tuple[int, int]] = deque()  # (last index, bytes) per proposal batch
        self.uncommitted_bytes = 0
        self._committed_in_term = False
        self._commit_dirty = False
        self._append_dirty = False
        self._lease_disabled = False
        # with lease reads, a (re)started node behaves as if it heard a leader at start: no votes for T
        # ticks, so a lease that counted on this node before it crashed stays valid
        self._boot_guard = config.read_only is ReadOnlyOption.LEASE
        self._ready_out = False
        self.snapshot: SnapshotMeta | None = None  # the newest snapshot the driver stored (set_snapshot)
        self._init_membership(hard_state)
        self._prev_hard_state = self.hard_state
        self._prev_soft_state = SoftState(None, Role.FOLLOWER.value)
        self._become_follower(self.current_term, None)

    def __repr__(self) -> str:
        return f"RaftCore({self.id}, {self.role.value}, term={self.current_term}, leader={self.leader_id}, {self.log})"

    # ---- read-only views ----

    @property
    def commit_index(self) -> int:
        return self.log.commit_index

    @property
    def applied(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def hard_state(self) -> HardState:
        commit = max(self.log.commit_index, self._commit_floor)
        return HardState(self.current_term, self.voted_for, commit, self._conf_base_bytes)

    # ---- inputs ----

    def tick(self) -> None:
        self.now += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def propose(self, data: bytes) -> Proposed:
        return self.propose_batch((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> Proposed:
        """Append `datas` as NORMAL entries (leader only); raises NotLeaderError / ProposalDroppedError."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if not datas:
            raise ValueError("propose_batch needs at least one entry")
        if self.lead_transferee is not None:
            raise ProposalDroppedError("transferring")
        size = sum(map(len, datas))
        if self.uncommitted_bytes > 0 and self.uncommitted_bytes + size > self.config.max_uncommitted_bytes:
            raise ProposalDroppedError("busy")
        term = self.current_term
        first = self.log.last_index() + 1
        last = self.log.append(make_entries(first, term, datas))
        self._uncommitted.append((last, size))
        self.uncommitted_bytes += size
        self._append_dirty = True  # sent at the next ready(): proposals until then share AppendEntries
        return Proposed(first, last, term)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a `ReadState(index, context)` comes in a later Ready."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if not self._committed_in_term:
            self.read_only.waiting.append(context)  # thesis 6.4 step 1: wait for the term's no-op
            return
        self._start_read(context)

    def step(self, m: Message) -> None:
        if m.group != self.group:
            self.dropped["wrong_group"] += 1
            return
        if m.to_id != self.id:
            self.dropped["misaddressed"] += 1
            return
        frm = m.from_id
        if frm == self.id or (
            frm not in self._members and not isinstance(m, AppendEntries | InstallSnapshot | TimeoutNow)
        ):
            self.dropped["unknown_peer"] += 1
            return
        if isinstance(m, RequestVote) and self.config.join and self.id not in self._members:
            # a joining node (a fresh or wiped store) that no configuration in its log names yet must not
            # vote: a stale node whose old configuration still lists this id as a voter would count the
            # vote of an empty log and could win without the committed entries (jepsen_like found it: a
            # wiped node re-added under its old id elected a stale leader that overwrote committed entries)
            self.dropped["not_member"] += 1
            return
        term = m.term
        if term < 0:
            self.dropped["bad_term"] += 1
            return
        if isinstance(m, AppendEntries) and not well_formed(m):
            self.dropped["bad_index"] += 1
            return
        if isinstance(m, InstallSnapshot):
            garbage = self._snapshot_garbage(m)
            if garbage is not None:
                self.dropped[garbage] += 1
                return
        if term > self.current_term:
            if isinstance(m, RequestVote):
                if not m.transfer and self._in_lease():
                    self.dropped["in_lease"] += 1
                    return
                if not m.pre_vote:
                    self._become_follower(term, None)
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.vote_granted:
                pass  # a granted pre-vote answers with the term we asked about: not a newer term
            elif isinstance(m, AppendEntries | InstallSnapshot):
                self._become_follower(term, m.from_id)
            else:
                self._become_follower(term, None)
        elif term < self.current_term:
            self.dropped["stale_term"] += 1
            if isinstance(m, AppendEntries):
                # tell a stale leader (maybe partitioned away and back) that its term is over
                self._send(
                    AppendEntriesResponse(
                        term=self.current_term,
                        from_id=self.id,
                        to_id=m.from_id,
                        group=self.group,
                        last_log_index=self.log.last_index(),
                    )
                )
            elif isinstance(m, InstallSnapshot):
                self._send(
                    InstallSnapshotResponse(term=self.current_term, from_id=self.id, to_id=m.from_id, group=self.group)
                )
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(
                    RequestVoteResponse(
                        term=self.current_term, from_id=self.id, to_id=m.from_id, group=self.group, pre_vote=True
                    )
                )
            return
        if isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # ---- outputs ----

    def has_ready(self) -> bool:
        if self._ready_out:
            return False
        return bool(
            self._msgs
            or self._persisted_msgs
            or self._read_states
            or self.log.unstable
            or self.log.pending_snapshot is not None
            or (self._commit_dirty and self._commit_notify_due())
            or self.log.has_next_committed()
            or self._hard_state_changed()
            or self._prev_soft_state.leader_id != self.leader_id
            or self._prev_soft_state.role != self.role.value
        )

    def _hard_state_changed(self) -> bool:
        """`self.hard_state != self._prev_hard_state`, field by field without building a HardState (the
        driver asks `has_ready` several times per wake-up). `_HARD_STATE_FIELDS`, atop the module, pins the fields."""
        prev = self._prev_hard_state
        return (
            prev.commit_index != max(self.log.commit_index, self._commit_floor)
            or prev.current_term != self.current_term
            or prev.voted_for != self.voted_for
            or prev.config != self._conf_base_bytes
        )

    def ready(self) -> Ready:
        if self._ready_out:
            raise RaftInvariantError("ready() called again before advance()")
        if self._append_dirty:
            self._append_dirty = False
            self._broadcast_append()
        if self._commit_dirty:
            if self._commit_notify_due():
                self._notify_commit()
            else:
                self._commit_dirty = False  # the next AppendEntries or heartbeat carries it
        if self._removed_leader_done():
            self._become_follower(self.current_term, None)  # followers heard the commit just above
        hs = self.hard_state
        soft = SoftState(self.leader_id, self.role.value)
        rd = Ready(
            hard_state=hs if hs != self._prev_hard_state else None,
            entries=list(self.log.unstable),
            messages=self._msgs,
            persisted_messages=self._persisted_msgs,
            committed_entries=self.log.next_committed(self.config.max_committed_bytes),
            read_states=self._read_states,
            soft_state=soft if soft != self._prev_soft_state else None,
            snapshot=self.log.pending_snapshot,
        )
        self._msgs = []
        self._persisted_msgs = []
        self._read_states = []
        self._prev_hard_state = hs
        self._prev_soft_state = soft
        self._ready_out = True
        return rd

    def _commit_notify_due(self) -> bool:
        """Whether a new commit index goes to followers in a message of its own now: always unless
        `lazy_commit`, and always for a leader that removed itself (it steps down right after)."""
        return not self.config.lazy_commit or self._removed_leader_done()

    def advance(self, rd: Ready) -> None:
        """The driver persisted `rd.entries` and `rd.hard_state` and applied `rd.committed_entries`."""
        if not self._ready_out:
            raise RaftInvariantError("advance() without an outstanding ready()")
        self._ready_out = False
        if rd.snapshot is not None:
            self.log.snapshot_stable(rd.snapshot)
            if self.snapshot is None or rd.snapshot.index > self.snapshot.index:
                self.snapshot = rd.snapshot
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.recovering_until and self.log.stable_last_index() >= self.recovering_until:
            self.recovering_until = 0  # persisted again: a voter once more
            # its log is a leader's prefix up to past the saved commit index: those entries are the committed ones
            if self.log.commit_to(min(self._commit_floor, self.log.stable_last_index())):
                self._conf_fold()
        if self.role is Role.LEADER and self.progress[self.id].maybe_update(self.log.stable_last_index()):
            self._maybe_commit()

    # ---- roles ----

    def _reset(self, term: int) -> None:
        if term != self.current_term:
            self.current_term = term
            self.voted_for = None
        self.leader_id = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self._rng.randrange(self.config.election_tick, 2 * self.config.election_tick)
        self.lead_transferee = None
        self.votes = {}
        self.progress = {}
        self.read_only = ReadOnly()
        self._uncommitted.clear()
        self.uncommitted_bytes = 0
        self._committed_in_term = False
        self._commit_dirty = False
        self._append_dirty = False
        self._lease_disabled = False

    def _become_follower(self, term: int, leader_id: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id

    def _become_pre_candidate(self) -> None:
        # thesis 9.6: no term change, no vote recorded; just ask whether we could win
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self.votes = {self.id: True}
        self._boot_guard = False
        self._request_votes(self.current_term + 1, pre_vote=True)
        self._check_votes()

    def _become_candidate(self, transfer: bool = False) -> None:
        self._reset(self.current_term + 1)
        self.role = Role.CANDIDATE
        self.voted_for = self.id
        self.votes = {self.id: True}
        self._boot_guard = False
        self._request_votes(self.current_term, transfer=transfer)
        self._check_votes()

    def _request_votes(self, term: int, *, pre_vote: bool = False, transfer: bool = False) -> None:
        """Ask every other voter. A real vote request goes only after our own vote is durable (someone may
        count on the election it starts); a pre-vote changes no state, so it goes at once."""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        send = self._send if pre_vote else self._send_after_persist
        for p in sorted(self._voters - {self.id}):
            send(
                RequestVote(
                    term=term,
                    from_id=self.id,
                    to_id=p,
                    group=self.group,
                    last_log_index=last_index,
                    last_log_term=last_term,
                    pre_vote=pre_vote,
                    transfer=transfer,
                )
            )

    def _become_leader(self) -> None:
        if self.role is Role.FOLLOWER:
            raise RaftInvariantError("a follower cannot become leader without an election")
        self._reset(self.current_term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        cfg = self.config
        self.progress = {self.id: Progress(last + 1, cfg.max_inflight_msgs, cfg.max_inflight_bytes)}
        self._sync_progress()
        me = self.progress[self.id]
        me.maybe_update(self.log.stable_last_index())
        me.become_replicate()
        me.recent_active = True
        self.read_only.new_round(self.now)
        self.log.append([Entry(last + 1, self.current_term, b"", EntryKind.NOOP)])  # §8: a no-op opens the term
        self._broadcast_append()

    def _campaign(self, transfer: bool = False) -> None:
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer)

    def _check_votes(self) -> None:
        result = vote_result(self._voters, self.votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._become_candidate()
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self.current_term, None)

    def _may_campaign(self) -> bool:
        return not self.recovering_until and self._can_campaign()

    def _in_lease(self) -> bool:
        """Leader stickiness (thesis 4.2.3): ignore a disruptive vote request."""
        if self.role is Role.LEADER:
            return self.config.check_quorum
        heard = self.leader_id is not None or self._boot_guard
        return heard and self.election_elapsed < self.config.election_tick

    # ---- ticks ----

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self._boot_guard = False
        if self.election_elapsed >= self.randomized_election_timeout and self._may_campaign():
            self.election_elapsed = 0
            self._campaign()

    def _tick_leader(self) -> None:
        cfg = self.config
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= cfg.election_tick:
            self.election_elapsed = 0
            if cfg.check_quorum:
                progress = self.progress
                active = sum(1 for p in self._voters if progress[p].recent_active)
                if active < majority(len(self._voters)):
                    self._become_follower(self.current_term, None)
                    return
                for p in self._others:
                    self.progress[p].recent_active = False
            self.lead_transferee = None  # a transfer not done within T ticks is abandoned
        if self.heartbeat_elapsed >= cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()
            self._maybe_transfer_to_preferred()

    # ---- per-role message handling ----

    def _handle_request_vote(self, m: RequestVote) -> None:
        can_vote = (
            self.voted_for == m.from_id
            or (self.voted_for is None and self.leader_id is None)
            or (m.pre_vote and m.term > self.current_term)
        )
        if self.recovering_until:
            tip = self._recovering_tip
            if tip is None or (m.last_log_term, m.last_log_index) < tip:
                can_vote = False
                self.dropped["vote_while_recovering"] += 1
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            if m.pre_vote:
                self._send(
                    RequestVoteResponse(
                        term=m.term,
                        from_id=self.id,
                        to_id=m.from_id,
                        group=self.group,
                        vote_granted=True,
                        pre_vote=True,
                    )
                )
                return
            self.election_elapsed = 0
            self.voted_for = m.from_id
            self._send_after_persist(
                RequestVoteResponse(
                    term=self.current_term, from_id=self.id, to_id=m.from_id, group=self.group, vote_granted=True
                )
            )
            return
        reply = RequestVoteResponse(
            term=self.current_term, from_id=self.id, to_id=m.from_id, group=self.group, pre_vote=m.pre_vote
        )
        if m.pre_vote:
            self._send(reply)
        else:
            self._send_after_persist(reply)

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.leader_id = m.from_id
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.leader_id = m.from_id
            self._handle_install_snapshot(m)
        elif isinstance(m, TimeoutNow):
            if self._may_campaign():
                self._campaign(transfer=True)
            else:
                self.dropped["not_voter"] += 1
        else:
            self.dropped["unexpected"] += 1

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self._become_follower(m.term, m.from_id)  # §5.2: a leader of our term exists
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self._become_follower(m.term, m.from_id)
            self._handle_install_snapshot(m)
        elif isinstance(m, RequestVoteResponse):
            pre = self.role is Role.PRE_CANDIDATE
            expected = self.current_term + 1 if pre else self.current_term
            if m.pre_vote != pre or (m.vote_granted and m.term != expected):
                self.dropped["unexpected"] += 1
                return
            self.votes.setdefault(m.from_id, m.vote_granted)
            self._check_votes()
        else:
            self.dropped["unexpected"] += 1

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendEntriesResponse):
            self._handle_append_response(m)
        elif isinstance(m, InstallSnapshotResponse):
            self._handle_snapshot_response(m)
        else:
            self.dropped["unexpected"] += 1

    # ---- follower: AppendEntries (§5.3) ----

    def _handle_append(self, m: AppendEntries) -> None:
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        log = self.log
        commit = log.commit_index
        if prev < commit:
            # entries up to our commit index are in every later leader's log (§5.4): skip them
            if prev + len(entries) <= commit:
                self._reply_append(m, commit)
                return
            entries = entries[commit - prev :]
            prev, prev_term = commit, log.term(commit)
        last_new = log.maybe_append(prev, prev_term, entries)
        if last_new is None:
            hint = log.find_conflict_by_term(min(prev, log.last_index()), prev_term)
            self._send_after_persist(
                AppendEntriesResponse(
                    term=self.current_term,
                    from_id=self.id,
                    to_id=m.from_id,
                    group=self.group,
                    reject_index=m.prev_log_index,
                    conflict_index=hint,
                    conflict_term=log.term_or_none(hint) or 0,
                    last_log_index=log.last_index(),
                    read_context=m.read_context,
                )
            )
            return
        self._conf_after_append(prev, last_new, entries)
        # never commit past what we know matches the leader (what follows `last_new` may still be replaced)
        if log.commit_to(min(m.leader_commit, last_new)):
            self._conf_fold()
        self._reply_append(m, last_new)

    def _reply_append(self, m: AppendEntries, match_index: int) -> None:
        self._send_after_persist(
            AppendEntriesResponse(
                term=self.current_term,
                from_id=self.id,
                to_id=m.from_id,
                group=self.group,
                success=True,
                match_index=match_index,
                last_log_index=self.log.last_index(),
                read_context=m.read_context,
            )
        )
