"""Membership changes and snapshot catch-up on real in-process nodes: on the in-memory hub (no socket), and
growing a group over each socket transport (gRPC and TCP peers), whose peer sets change with it.

Grow 3 -> 5, shrink 5 -> 3 under load, remove the leader, replace a node whose disk was wiped, and a
follower that was down while the log was compacted catches up by InstallSnapshot. Every node runs a
`ListStateMachine`, so each test can compare the replicated state, not only the logs.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client import Member
from dledger.client.client_policy import DLedgerError
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from dledger.node.state_machine import ListStateMachine
from dledger.testing.launcher import free_port_pairs, free_ports
from dledger.testing.memory_client import MemoryStubs
from dledger.testing.memory_transport import MemoryHub
from tests.node.cluster_util import memory_peers
from tests.support import wait_for_async


@dataclass
class Group:
    root: pathlib.Path
    addresses: dict[str, str]  # every node any test may start, id -> address
    initial: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    servers: dict[str, DLedgerServer] = field(default_factory=dict)
    machines: dict[str, ListStateMachine] = field(default_factory=dict)
    hub: MemoryHub | None = None  # peers and clients through it (no socket), or None: gRPC on loopback

    async def start(self, node_id: str, join: bool = False) -> DLedgerServer:
        # a joining node is given every current member and itself; the initial ones are the initial voters
        ids = [*self.initial] if not join else [i for i in self.addresses if i in self.servers or i == node_id]
        peers = {i: self.addresses[i] for i in ids}
        if not join:
            peers = {i: self.addresses[i] for i in self.initial}
        config = NodeConfig(
            self_id=node_id, peers=peers, store_dir=self.root / node_id, group="m", join=join, **self.overrides
        )
        sm = ListStateMachine()
        seed = hash(node_id) & 0xFFFF
        hub = self.hub
        server = DLedgerServer(config, [sm], seed=seed) if hub is None else hub.server(config, [sm], seed=seed)
        await server.start()
        self.servers[node_id], self.machines[node_id] = server, sm
        return server

    async def stop(self, node_id: str) -> None:
        await self.servers.pop(node_id).stop(grace=0)

    def leader(self) -> str | None:
        leaders = [i for i, s in self.servers.items() if s.node.role == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def client(self) -> AsyncDLedgerClient:
        peers = {i: self.addresses[i] for i in self.servers}
        stubs = None if self.hub is None else MemoryStubs(self.hub)
        return AsyncDLedgerClient(peers, group="m", timeout=10, stubs=stubs)

    def data(self, node_id: str) -> list[bytes]:
        return [d for _, d in self.machines[node_id].entries]


def run(
    tmp_path: pathlib.Path,
    body: Callable[[Group], Awaitable[None]],
    total: int = 5,
    initial: int = 3,
    sockets: bool = False,
    **kw: Any,
) -> None:
    """Run `body` with a started group of `initial` of `total` nodes: on the hub, or with `sockets` on
    loopback ports (the peer transport `kw` names)."""
    ids = [f"n{k}" for k in range(total)]
    if sockets:
        ports = free_port_pairs(total, 1000) if kw.get("peer_transport") == "tcp" else free_ports(total)
        addresses = {i: f"127.0.0.1:{p}" for i, p in zip(ids, ports, strict=True)}
    else:
        addresses = memory_peers(ids)

    async def main() -> None:
        hub = None if sockets else MemoryHub()
        group = Group(tmp_path, addresses, tuple(ids[:initial]), dict(kw), hub=hub)
        for node_id in group.initial:
            await group.start(node_id)
        try:
            await wait_for_async(group.leader, 10, "a leader")
            await body(group)
        finally:
            for node_id in list(group.servers):
                await group.stop(node_id)

    asyncio.run(main())


def voters(members: tuple[Member, ...]) -> set[str]:
    return {m.id for m in members if m.voter}


def learners(members: tuple[Member, ...]) -> set[str]:
    return {m.id for m in members if not m.voter}


async def add_and_promote(group: Group, client: AsyncDLedgerClient, node_id: str, *, started: bool = False) -> None:
    if not started:
        await group.start(node_id, join=True)
    result = await client.add_learner(node_id, group.addresses[node_id])
    assert node_id in learners(result.members)
    leader = group.servers[group.leader() or ""]
    await wait_for_async(
        lambda: group.servers[node_id].applied_index >= leader.commit_index - 1, 10, f"{node_id} caught up"
    )
    assert group.servers[node_id].status().role == "learner"
    # the promotion is refused while the learner lags, so retry until the client's deadline
    result = await client.promote(node_id)
    assert node_id in voters(result.members)


@pytest.mark.parametrize("transport", ["grpc", "tcp"])
def test_grow_three_to_five_then_lose_two_of_the_originals(tmp_path: pathlib.Path, transport: str) -> None:
    async def body(group: Group) -> None:
        async with group.client() as client:
            await client.append_batch([f"a{k}".encode() for k in range(20)])
            await add_and_promote(group, client, "n3")
            await add_and_promote(group, client, "n4")
            members = await client.members()
            assert voters(members) == {"n0", "n1", "n2", "n3", "n4"} and not learners(members)
            await client.append_batch([f"b{k}".encode() for k in range(20)])
            expected = [f"a{k}".encode() for k in range(20)] + [f"b{k}".encode() for k in range(20)]
            for node_id in group.servers:
                await wait_for_async(lambda n=node_id: group.data(n) == expected, 10, f"{node_id} applied everything")
            # two of the original three go away: the five-voter group still has a majority (3 of 5)
            leader = group.leader()
            for node_id in [i for i in ("n0", "n1", "n2") if i != leader][:2]:
                await group.stop(node_id)
        async with group.client() as client:
            await client.append(b"after")
            for node_id in group.servers:
                await wait_for_async(lambda n=node_id: group.data(n)[-1:] == [b"after"], 10, f"{node_id} applied")

    run(tmp_path, body, sockets=True, peer_transport=transport)


def test_the_leader_removes_itself_and_a_new_leader_takes_over(tmp_path: pathlib.Path) -> None:
    async def body(group: Group) -> None:
        old = group.leader()
        assert old is not None
        async with group.client() as client:
            await client.append(b"before")
            result = await client.remove(old)
            assert voters(result.members) == {"n0", "n1", "n2"} - {old}
            new = await wait_for_async(lambda: group.leader() if group.leader() not in (None, old) else None, 10, "new")
            assert group.servers[old].node.role != "leader"
            assert group.servers[old].status().role == "non-member"
            await client.append(b"after")
            members = await client.members()
            assert voters(members) == {"n0", "n1", "n2"} - {old}
            for node_id in {"n0", "n1", "n2"} - {old}:
                await wait_for_async(lambda n=node_id: group.data(n) == [b"before", b"after"], 10, f"{node_id} applied")
            assert new != old
            # the removed node neither leads nor campaigns, and does not disturb the others
            term = group.servers[new].status().term
            await client.append(b"later")
            assert group.servers[new].status().term == term and group.leader() == new

    run(tmp_path, body, total=3)


def test_shrink_five_to_three_under_load_loses_no_acknowledged_append(tmp_path: pathlib.Path) -> None:
    async def body(group: Group) -> None:
        acked: list[bytes] = []
        async with group.client() as client:
            await add_and_promote(group, client, "n3")
            await add_and_promote(group, client, "n4")
            stop = asyncio.Event()

            async def load() -> None:
                async with group.client() as writer:
                    k = 0
                    while not stop.is_set():
                        value = f"load-{k}".encode()
                        try:
                            await writer.append(value)
                            acked.append(value)
                        except DLedgerError:
                            pass  # a write refused or of unknown outcome during the change: not counted
                        k += 1

            task = asyncio.get_running_loop().create_task(load())
            await wait_for_async(lambda: len(acked) >= 10, 10, "load running")
            leader = group.leader()
            victims = [i for i in ("n3", "n4", "n0", "n1", "n2") if i != leader][:2]
            for node_id in victims:
                result = await client.remove(node_id)
                assert node_id not in {m.id for m in result.members}
            await wait_for_async(lambda: len(acked) >= 40, 10, "load continues after the changes")
            stop.set()
            await task
            members = await client.members()
            assert len(voters(members)) == 3 and not learners(members)
            survivors = voters(members)
        for node_id in victims:
            await group.stop(node_id)
        for node_id in survivors:
            await wait_for_async(
                lambda n=node_id: set(acked) <= set(group.data(n)), 10, f"{node_id} holds every acknowledged append"
            )
        first = group.data(next(iter(survivors)))
        assert all(group.data(n)[: len(first)] == first[: len(group.data(n))] for n in survivors)

    run(tmp_path, body)


def test_replace_a_node_whose_disk_was_wiped(tmp_path: pathlib.Path) -> None:
    async def body(group: Group) -> None:
        async with group.client() as client:
            await client.append_batch([f"x{k}".encode() for k in range(10)])
            first = group.leader() or ""
            await client.transfer_leadership(next(i for i in ("n0", "n1", "n2") if i != first))
            victim = first  # a node that voted in the old term
            await group.stop(victim)
            shutil.rmtree(group.root / victim)
            await client.remove(victim)
            await client.append(b"without it")
            removed_in = group.servers[group.leader() or ""].node.core.current_term  # type: ignore[union-attr]
            assert removed_in >= 2
            # the wiped node learns the group's term before its core starts (join_term.py): a stale leader of
            # an older term could not count it
            server = await group.start(victim, join=True)
            assert server.node.core is not None and server.node.core.current_term >= removed_in
            await add_and_promote(group, client, victim, started=True)
            assert voters(await client.members()) == {"n0", "n1", "n2"}
            await client.append(b"with it again")
            expected = [f"x{k}".encode() for k in range(10)] + [b"without it", b"with it again"]
            for node_id in group.servers:
                await wait_for_async(lambda n=node_id: group.data(n) == expected, 10, f"{node_id} applied")

    run(tmp_path, body, total=3)


@pytest.mark.parametrize("sockets", [False, True], ids=["memory", "grpc"])
def test_a_follower_down_past_compaction_catches_up_by_snapshot(tmp_path: pathlib.Path, sockets: bool) -> None:
    """Over the hub, and over gRPC (the only runtime test of gRPC snapshot chunks between nodes)."""

    async def body(group: Group) -> None:
        leader = group.leader()
        assert leader is not None
        follower = next(i for i in ("n0", "n1", "n2") if i != leader)
        async with group.client() as client:
            await client.append_batch([b"early"] * 5)
            await wait_for_async(lambda: len(group.data(follower)) == 5, 10, "follower applied")
            await group.stop(follower)
            for k in range(40):
                await client.append_batch([f"missed-{k}-{j}".encode() * 40 for j in range(8)])
            # compact on both live nodes: the entries the follower needs are gone everywhere
            for node_id, server in group.servers.items():
                first = await server.compact(server.commit_index)
                assert first > 6, f"{node_id} compacted only to {first}"
                assert server.node.core is not None and server.node.core.snapshot is not None
            await group.start(follower)
            await client.append(b"after")
            lead = group.machines[group.leader() or leader]
            await wait_for_async(lambda: group.data(follower) == [d for _, d in lead.entries], 15, "follower caught up")
            server = group.servers[follower]
            assert server.node.stats.snapshots_installed == 1
            assert server.status().first_index > 6  # its log now starts after the snapshot
            # counted once the last chunk's answer is back through the I/O thread, which may be after the install
            await wait_for_async(
                lambda: group.servers[group.leader() or leader].node.stats.snapshots_sent >= 1, 15, "snapshot counted"
            )

    run(tmp_path, body, total=3, sockets=sockets, segment_bytes=16384, snapshot_chunk_bytes=4096)


def test_a_bad_membership_request_is_refused_without_a_change(tmp_path: pathlib.Path) -> None:
    async def body(group: Group) -> None:
        async with group.client() as client:
            from dledger.client.client_policy import InvalidRequestError

            before = await client.members()
            with pytest.raises(InvalidRequestError):
                await client.promote("n1")  # already a voter
            with pytest.raises(InvalidRequestError):
                await client.remove("nobody")
            with pytest.raises(InvalidRequestError):
                await client.add_learner("n1", "127.0.0.1:1")  # already a member
            for node_id, address, problem in (
                ("../x", "127.0.0.1:7", "node id"),
                ("n-7", "127.0.0.1:7", "node id"),
                ("n7", "not an address", "host:port"),
                ("n7", "evil host;rm:7", "not a name or an IP address"),
            ):
                with pytest.raises(InvalidRequestError, match=problem):
                    await client.add_learner(node_id, address)
            assert await client.members() == before

    run(tmp_path, body, total=3)
