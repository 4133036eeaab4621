"""What both peer transports (gRPC streams and framed TCP) do alike with their links to the other nodes.

- `split_lanes`: a peer's messages go on two lanes: appends that carry entries (bulk) apart from everything
  else (control: heartbeats, votes, replies), so a long append never holds up the messages that keep a
  leader's lease and an election's timing.
- `admit`: a lane's bounded outbox. With the peer unreachable the oldest messages make room for the newest
  (old ones are stale by the time it is back); with the peer connected and the outbox full, the newest are
  dropped. Either way the outbox never holds more than `max_pending`, and every drop is counted.
- `LinkTable`: the links by peer id, kept in step with the membership (a new peer or a peer's new address
  gets a new link, a removed one is closed in the background and awaited by `close`).

Invariants: Raft tolerates lost messages, so dropping is always safe; what is admitted to one lane goes out
in the order it was pushed.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from dledger._proto import dledger_pb2 as pb
from dledger.node.codec import Parts

__all__ = ["Link", "LinkTable", "Outgoing", "admit", "split_lanes"]

Outgoing = pb.PeerMessage | bytes | Parts  # a message, or its serialization (`codec.to_wire_parts`)


def split_lanes(messages: Sequence[Outgoing]) -> tuple[list[bytes | Parts], list[bytes | Parts]]:
    """(control, bulk): appends with entries (already `Parts`) are bulk; the rest is serialized control."""
    control: list[bytes | Parts] = []
    bulk: list[bytes | Parts] = []
    for m in messages:
        if isinstance(m, Parts):  # an AppendEntries with entries (`codec.to_wire_parts`)
            bulk.append(m)
        else:
            control.append(m.SerializeToString() if isinstance(m, pb.PeerMessage) else m)
    return control, bulk


def admit(
    outbox: deque[bytes | Parts],
    messages: Sequence[bytes | Parts],
    *,
    max_pending: int,
    connected: bool,
    stats: Counter[str],
) -> None:
    """Append `messages` to `outbox` within `max_pending` (see the module docstring for what is dropped)."""
    room = max_pending - len(outbox)
    if room < len(messages):
        if not connected:  # keep the newest: old messages to an unreachable peer are stale
            drop = min(len(outbox), len(messages) - room)
            for _ in range(drop):
                outbox.popleft()
            stats["dropped_stale"] += drop
            room += drop
        if room < len(messages):
            stats["dropped_full"] += len(messages) - max(room, 0)
            messages = messages[: max(room, 0)]
    outbox.extend(messages)


class Link(Protocol):
    """One peer's outgoing side, as `LinkTable` drives it."""

    address: str

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    def push(self, messages: Sequence[Outgoing]) -> None: ...

    async def close(self) -> None: ...


L = TypeVar("L", bound=Link)


class LinkTable(Generic[L]):
    """The links to every other member, made by `make(node_id, address)`; see the module docstring."""

    def __init__(
        self, self_id: str, peers: Mapping[str, str], make: Callable[[str, str], L], stats: Counter[str]
    ) -> None:
        self.self_id = self_id
        self.links: dict[str, L] = {}
        self._make = make
        self._stats = stats
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()
        for node_id, address in self._wanted(peers).items():
            self.links[node_id] = make(node_id, address)

    def _wanted(self, peers: Mapping[str, str]) -> dict[str, str]:
        return {node_id: address for node_id, address in peers.items() if node_id != self.self_id and address}

    def start(self) -> None:
        self._started = True
        for link in self.links.values():
            link.start()

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """Membership changed: open links to new peers (or to a peer's new address), close the others."""
        wanted = self._wanted(peers)
        for node_id in list(self.links):
            link = self.links[node_id]
            if wanted.get(node_id) != link.address:
                del self.links[node_id]
                task = asyncio.get_running_loop().create_task(link.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        for node_id, address in wanted.items():
            if node_id not in self.links:
                link = self.links[node_id] = self._make(node_id, address)
                if self._started:
                    link.start()

    def send(self, to_id: str, messages: Sequence[Outgoing]) -> None:
        link = self.links.get(to_id)
        if link is None:
            self._stats["dropped_unknown_peer"] += len(messages)
            return
        link.push(messages)

    def connected(self, to_id: str) -> bool:
        link = self.links.get(to_id)
        return link is not None and link.connected

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links.values()), *self._closing)
