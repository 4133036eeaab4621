"""Leadership-confirmation rounds for linearizable reads: ReadIndex and lease (thesis 6.4).

The leader numbers rounds 1, 2, ...; every AppendEntries it sends carries the current round number in
`read_context` (8 bytes) and followers echo it. A new round starts at each heartbeat and at each read
request, so a round that a peer echoes was sent after every read registered at or before that round.
Each follower's highest echoed round is kept in its Progress; the *confirmed* round is the highest round
a quorum echoed (the leader counts itself for the current round).

Invariants:
- a ReadIndex request registered at round r (with `index` = the leader's commit index then, taken only
  once the leader committed an entry of its term) is answered only after a round >= r is confirmed;
- answers leave in request order;
- the lease start is the tick at which the confirmed round was *sent* (never the receive time), so a
  delayed acknowledgement can only shorten the lease.
"""

from __future__ import annotations

from collections import deque

from dledger.raft.ready import ReadState

__all__ = ["ReadOnly", "decode_round", "encode_round"]

_MAX_SENT_AT = 4096


def encode_round(round_: int) -> bytes:
    return round_.to_bytes(8, "big")


def decode_round(context: bytes) -> int | None:
    """The round in an echoed context, or None when it is not one of ours."""
    if len(context) != 8:
        return None
    return int.from_bytes(context, "big")


class ReadOnly:
    """Pending reads of one leader term, and its confirmation rounds."""

    __slots__ = ("confirmed", "context", "lease_start", "pending", "round", "sent_at", "waiting")

    def __init__(self) -> None:
        self.round = 0
        self.context = b""  # encode_round(self.round), cached for the hot path
        self.confirmed = 0
        self.sent_at: dict[int, int] = {}
        self.pending: deque[tuple[int, int, bytes]] = deque()  # (round, read index, request context)
        self.waiting: list[bytes] = []  # requests waiting for the term's first commit
        self.lease_start: int | None = None

    def new_round(self, now: int) -> bytes:
        self.round += 1
        self.context = encode_round(self.round)
        self.sent_at[self.round] = now
        if len(self.sent_at) > _MAX_SENT_AT:
            del self.sent_at[next(iter(self.sent_at))]
        return self.context

    def add_request(self, index: int, context: bytes) -> None:
        """Register a read at the current round (call `new_round` first)."""
        self.pending.append((self.round, index, context))

    def confirm(self, round_: int) -> list[ReadState]:
        """A quorum echoed `round_`: renew the lease and release the reads registered up to it."""
        if round_ <= self.confirmed:
            return []
        self.confirmed = round_
        sent = self.sent_at.get(round_)
        if sent is not None:
            self.lease_start = sent
        for r in [r for r in self.sent_at if r < round_]:
            del self.sent_at[r]
        out: list[ReadState] = []
        pending = self.pending
        while pending and pending[0][0] <= round_:
            _, index, ctx = pending.popleft()
            out.append(ReadState(index, ctx))
        return out
