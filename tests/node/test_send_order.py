"""The driver lets the peer links run before work that does not gate what they carry.

A peer link is a task: what the driver queues leaves on the link's next loop turn. A leader's appends do not
wait for its own write, so it yields one turn before an inline persist (the write overlaps their trip); a
follower's answers gate the leader's commit, so it yields one turn before applying. Here the transport is a
fake whose "link" takes each queued batch on the next loop turn, and every step is recorded in order.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Sequence
from typing import Any

from dledger.node.config import NodeConfig
from dledger.node.node import RaftNode
from dledger.raft import RaftCore, Role
from dledger.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVote, RequestVoteResponse
from dledger.storage_api import Entry
from tests.node.cluster_util import RecordingStateMachine

PEERS = {"n0": "127.0.0.1:1", "n1": "127.0.0.1:2", "n2": "127.0.0.1:3"}
Event = tuple[str, Any]


class LinkLikeTransport:
    """Records ("queued", peer) at `send` and ("taken", peer) when the link would run: the next loop turn."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def send(self, to_id: str, messages: Sequence[object]) -> None:
        self.events.append(("queued", to_id))
        asyncio.get_running_loop().call_soon(self.events.append, ("taken", to_id))

    def set_peers(self, peers: object) -> None:
        pass

    def connected(self, to_id: str) -> bool:
        return True


class RecordingMachine(RecordingStateMachine):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    def apply(self, entry: Entry) -> None:
        self.events.append(("apply", entry.index))
        super().apply(entry)


def _node(tmp_path: pathlib.Path, node_id: str, events: list[Event]) -> tuple[RaftNode, RaftCore]:
    node = RaftNode(
        NodeConfig(self_id=node_id, peers=PEERS, store_dir=tmp_path / node_id, group="t", flush="async"),
        [RecordingMachine(events)],
        seed=1,
    )
    node.open_storage()
    node.transport = LinkLikeTransport(events)  # type: ignore[assignment]
    store, append = node.log, node.log.append  # type: ignore[union-attr]

    def recording_append(entries: Sequence[Entry]) -> None:
        events.append(("persist", entries[-1].index))
        events.append(("persist on", threading.current_thread().name))
        append(entries)

    store.append = recording_append  # type: ignore[method-assign,union-attr]
    assert node.core is not None
    return node, node.core


def _close(node: RaftNode) -> None:
    node._io.shutdown(wait=True)
    node._close_storage()


async def _drain(node: RaftNode, core: RaftCore) -> None:
    while core.has_ready():
        await node._handle_ready(core, core.ready())


def _append_from_n0(prev: int, count: int, commit: int) -> AppendEntries:
    entries = tuple(Entry(prev + k + 1, 1, b"e%d" % (prev + k + 1)) for k in range(count))
    return AppendEntries(term=1, from_id="n0", to_id="n1", group="t", prev_log_index=prev,
                         prev_log_term=1 if prev else 0, entries=entries, leader_commit=commit)  # fmt: skip


def _before(events: list[Event], first: Event, then: Event) -> bool:
    return events.index(first) < events.index(then)


def test_a_leader_hands_its_appends_to_the_links_before_its_own_write(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        events: list[Event] = []
        node, core = _node(tmp_path, "n0", events)
        try:
            votes: list[Message] = []
            node._send = votes.extend  # type: ignore[method-assign,assignment]  # the election is not under test
            while core.role is Role.FOLLOWER:
                core.tick()
            for _ in range(2):  # pre-vote, then the vote
                await _drain(node, core)
                for req in [m for m in votes if isinstance(m, RequestVote)]:
                    core.step(RequestVoteResponse(term=req.term, from_id=req.to_id, to_id="n0", group="t",
                                                  vote_granted=True, pre_vote=req.pre_vote))  # fmt: skip
                votes.clear()
            assert core.role is Role.LEADER
            del node._send  # the real one again, over the fake transport
            await _drain(node, core)
            last = core.log.last_index()
            for peer in ("n1", "n2"):  # both have the new term's first entry: the next append goes out at once
                core.step(AppendEntriesResponse(term=core.current_term, from_id=peer, to_id="n0", group="t",
                                                success=True, match_index=last, last_log_index=last))  # fmt: skip
            await _drain(node, core)
            await asyncio.sleep(0)
            events.clear()
            first = core.propose_batch([b"payload"]).first_index
            await _drain(node, core)
            # inline on the loop's thread (on the I/O thread the write would overlap the links anyway)
            assert events[-2:] == [("persist", first), ("persist on", threading.main_thread().name)], events
            for peer in ("n1", "n2"):
                assert _before(events, ("taken", peer), ("persist", first)), events
        finally:
            _close(node)

    asyncio.run(main())


def test_a_follower_answers_before_it_applies(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        events: list[Event] = []
        node, core = _node(tmp_path, "n1", events)
        try:
            core.step(_append_from_n0(0, 2, 0))
            await _drain(node, core)
            await asyncio.sleep(0)
            assert ("taken", "n0") in events and not [e for e in events if e[0] == "apply"]
            events.clear()
            core.step(_append_from_n0(2, 1, 2))  # entry 3, and the news that 1 and 2 are committed
            await _drain(node, core)
            assert [e for e in events if e[0] == "apply"] == [("apply", 1), ("apply", 2)]
            assert _before(events, ("persist", 3), ("queued", "n0")), events  # the answer waits for the write
            assert _before(events, ("taken", "n0"), ("apply", 1)), events  # and leaves before the apply
        finally:
            _close(node)

    asyncio.run(main())
