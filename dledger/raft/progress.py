"""The leader's view of one follower: `Progress` (etcd's tracker/progress.go, our own code).

States:
- PROBE: the leader does not know where the follower's log matches; it sends one AppendEntries at a time
  (`probe_sent` pauses until a response or heartbeat answer) and backs off using the reject hints.
- REPLICATE: the log matches at `match_index`; the leader streams batches optimistically, moving
  `next_index` past what it sent, bounded by `Inflights` (message count and payload bytes).
- SNAPSHOT: the entries the follower needs were compacted away; the leader sent InstallSnapshot for its
  snapshot at `pending_snapshot` and sends nothing else until the driver reports the streaming outcome
  (`RaftCore.report_snapshot`) or the follower answers.

Invariants: `match_index < next_index`; `match_index` never decreases while this Progress lives;
in PROBE nothing is tracked in `inflights`.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Inflights", "Progress", "ProgressState"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """AppendEntries sent and not yet acknowledged: (last index, payload bytes), oldest first."""

    __slots__ = ("_queue", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._queue: deque[tuple[int, int]] = deque()
        self.bytes = 0
        self.max_count = max_count
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, last_index: int, size: int) -> None:
        self._queue.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is <= `index` (the follower acknowledged it)."""
        q = self._queue
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or self.bytes >= self.max_bytes

    def reset(self) -> None:
        self._queue.clear()
        self.bytes = 0


class Progress:
    """Replication state of one peer, kept by the leader."""

    __slots__ = (
        "acked_round",
        "inflights",
        "match_index",
        "next_index",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "sent_round",
        "state",
    )

    def __init__(self, next_index: int, max_inflight_msgs: int, max_inflight_bytes: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights = Inflights(max_inflight_msgs, max_inflight_bytes)
        self.recent_active = False  # heard from since the last check-quorum round
        self.acked_round = 0  # highest leadership-confirmation round this peer echoed
        self.sent_commit = 0  # highest commit index this peer can have learned from us
        self.sent_round = 0  # confirmation round in which we last sent this peer entries
        self.pending_snapshot = 0  # in SNAPSHOT: the index of the snapshot being sent

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value}, match={self.match_index}, next={self.next_index}, "
            f"inflight={len(self.inflights)}/{self.inflights.bytes}B, paused={self.is_paused()})"
        )

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # after a snapshot (sent or failed) probe from past it: the follower likely holds it now
            self.next_index = max(self.match_index, self.pending_snapshot) + 1
            self.pending_snapshot = 0
        else:
            self.next_index = self.match_index + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.pending_snapshot = 0
        self.next_index = self.match_index + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.probe_sent = False
        self.inflights.reset()

    def is_paused(self) -> bool:
        state = self.state
        if state is ProgressState.REPLICATE:
            return self.inflights.full()
        if state is ProgressState.PROBE:
            return self.probe_sent
        return True

    def sent_entries(self, last_index: int, size: int) -> None:
        """Record an AppendEntries carrying entries up to `last_index` (`size` payload bytes)."""
        if self.state is ProgressState.REPLICATE:
            self.next_index = last_index + 1
            self.inflights.add(last_index, size)
        else:
            self.probe_sent = True

    def maybe_update(self, match_index: int) -> bool:
        """The follower matches up to `match_index`; returns whether `match_index` grew."""
        self.probe_sent = False
        if match_index <= self.match_index:
            return False
        self.match_index = match_index
        if self.next_index <= match_index:
            self.next_index = match_index + 1
        return True

    def maybe_decrease_to(self, rejected: int, hint: int, last_log_index: int | None = None) -> bool:
        """The follower rejected `prev_log_index == rejected`; `hint` is the index to probe at next.

        Returns False (and changes nothing) for a stale reject: one about an index we already know matches
        (REPLICATE) or about a probe we are no longer waiting for (PROBE).

        Exception: a follower whose log now ends below its match index lost entries it had acknowledged
        (an un-fsynced tail cut by a power loss, with async flush). Its log up to its end is still a prefix of
        what matched, so the match index comes down to it and probing starts there; without this the leader
        would probe at match + 1 forever. Lowering a match never un-commits anything.
        """
        if last_log_index is not None and last_log_index < self.match_index:
            self.match_index = last_log_index
            self.next_index = last_log_index + 1
            self.probe_sent = False
            return True
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False
        self.next_index = max(min(rejected, hint + 1), self.match_index + 1)
        self.probe_sent = False
        return True
