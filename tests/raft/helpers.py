"""Helpers for core-level tests: build one core over in-memory storage, drain its Ready, make it leader."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

from dledger.raft import (
    Config,
    Message,
    RaftCore,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    persist_ready,
)
from dledger.storage_api import Entry, EntryKind, HardState
from dledger.testing import MemoryHardStateStore, MemoryLog

PEERS3 = ("n1", "n2", "n3")
M = TypeVar("M")


class Node:
    """A core with its storage, and the messages it sent (now / after persist)."""

    def __init__(
        self,
        node_id: str = "n1",
        peers: Sequence[str] = PEERS3,
        *,
        terms: Sequence[int] = (),
        hard_state: HardState | None = None,
        seed: int = 0,
        **config: Any,
    ) -> None:
        self.log = MemoryLog(entries_with_terms(terms))
        self.store = MemoryHardStateStore(hard_state)
        self.config = Config(id=node_id, peers=tuple(peers), **config)
        self.core = RaftCore(self.config, self.log, self.store.load(), random.Random(seed))
        self.last_ready: Ready | None = None

    def drain(self) -> list[Message]:
        """Run Ready -> persist -> advance until nothing is left; returns every message, in send order."""
        out: list[Message] = []
        while self.core.has_ready():
            rd = self.core.ready()
            self.last_ready = rd
            out += rd.messages
            persist_ready(rd, self.log, self.store)
            out += rd.persisted_messages
            self.core.advance(rd)
        return out

    def step_all(self, msgs: Sequence[Message]) -> list[Message]:
        for m in msgs:
            self.core.step(m)
        return self.drain()


def entries_with_terms(terms: Sequence[int], start: int = 1) -> list[Entry]:
    """Entries whose data names their (index, term), so equal (index, term) means an equal entry."""
    return [Entry(start + k, t, b"%d.%d" % (start + k, t)) for k, t in enumerate(terms)]


def of_type(msgs: Sequence[object], kind: type[M]) -> list[M]:
    return [m for m in msgs if isinstance(m, kind)]


def make_leader(node: Node) -> list[Message]:
    """Tick `node` until it campaigns and feed it every vote; returns what it sent as the new leader."""
    core = node.core
    for _ in range(10 * core.config.election_tick):
        if core.role is not Role.FOLLOWER:
            break
        core.tick()
    for _ in range(2):
        sent = node.drain()
        if core.role is Role.LEADER:
            return sent
        for req in of_type(sent, RequestVote):
            core.step(
                RequestVoteResponse(
                    term=req.term,
                    from_id=req.to_id,
                    to_id=core.id,
                    group=core.group,
                    vote_granted=True,
                    pre_vote=req.pre_vote,
                )
            )
    assert core.role is Role.LEADER, core
    return node.drain()


def data_entries(entries: Sequence[Entry]) -> list[bytes]:
    return [e.data for e in entries if e.kind is EntryKind.NORMAL]
