"""The client service and AsyncDLedgerClient end to end over gRPC, with fake nodes behind the service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc.aio
import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import (
    EntryNotFoundError,
    InvalidRequestError,
    NotLeaderError,
    OutcomeUnknownError,
)
from dledger.node.errors import BusyError, LeaderHint, NodeNotLeaderError, NodeOutcomeUnknownError, NodeStoppedError
from dledger.node.services import ClientServicer
from dledger.storage_api import Entry, UnavailableError


@dataclass
class FakeNode:
    node_id: str
    leader: str = ""
    leader_address: str = ""
    group: str = "g"
    max_entry_bytes: int = 1024
    log: list[bytes] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    calls: int = 0
    stopping: bool = False
    current_term: int = 3

    async def append(self, items: Sequence[bytes]) -> tuple[int, int]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.leader != self.node_id:
            raise NodeNotLeaderError(self.leader_hint())
        first = len(self.log) + 1
        self.log.extend(items)
        return first, 3

    async def read_index(self) -> int:
        if self.leader != self.node_id:
            raise NodeNotLeaderError(self.leader_hint())
        return len(self.log)

    async def get(self, index: int) -> Entry:
        if self.stopping:
            raise NodeStoppedError("the node is stopping")
        if index > len(self.log):
            raise UnavailableError(f"index {index} is not committed")
        return Entry(index, 3, self.log[index - 1])

    def node_status(self) -> pb.NodeStatus:
        role = "leader" if self.leader == self.node_id else "follower"
        return pb.NodeStatus(id=self.node_id, role=role, term=3, last_index=len(self.log), healthy=True)

    async def transfer_leadership(self, to_id: str) -> None:
        if to_id == "nobody":
            raise ValueError("unknown node 'nobody'")

    def leader_hint(self) -> LeaderHint:
        return LeaderHint(self.leader, self.leader_address)


Body = Callable[[dict[str, FakeNode], dict[str, str]], Awaitable[None]]


def with_nodes(body: Body, ids: Sequence[str] = ("n0", "n1", "n2")) -> None:
    async def main() -> None:
        servers, nodes, peers = [], {}, {}
        for node_id in ids:
            node = FakeNode(node_id)
            server = grpc.aio.server()
            pb_grpc.add_DLedgerClientServiceServicer_to_server(ClientServicer(node), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            nodes[node_id], peers[node_id] = node, f"127.0.0.1:{port}"
        for node in nodes.values():
            node.leader, node.leader_address = ids[-1], peers[ids[-1]]
        try:
            await body(nodes, peers)
        finally:
            for server in servers:
                await server.stop(None)

    asyncio.run(main())


def test_append_follows_not_leader_to_the_leader() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        async with AsyncDLedgerClient(peers, group="g") as client:
            results = await client.append_batch([b"a", b"b"])
            assert [(r.index, r.term) for r in results] == [(1, 3), (2, 3)]
            assert client.leader == "n2"
            assert nodes["n0"].calls == 1 and nodes["n2"].calls == 1
            assert (await client.get(2)).data == b"b"
            assert await client.read_index() == 2
            assert await client.confirmed_term() == 3  # the leader's term travels with the read

    with_nodes(body)


def test_wrong_group_and_oversized_entries_are_invalid() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        async with AsyncDLedgerClient(peers, group="other") as client:
            with pytest.raises(InvalidRequestError, match="group"):
                await client.append(b"x")
        async with AsyncDLedgerClient(peers, group="g") as client:
            with pytest.raises(InvalidRequestError, match="limit"):
                await client.append(b"x" * 2000)
        assert all(n.calls == 0 for n in nodes.values())

    with_nodes(body)


def test_busy_is_retried_and_unknown_is_reported() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        nodes["n2"].failures = [BusyError("too many uncommitted bytes")]
        async with AsyncDLedgerClient({"n2": peers["n2"]}, group="g") as client:
            assert (await client.append(b"x")).index == 1
            nodes["n2"].failures = [NodeOutcomeUnknownError("leadership lost")]
            with pytest.raises(OutcomeUnknownError, match="leadership lost"):
                await client.append(b"y")
            nodes["n2"].failures = [RuntimeError("boom")]
            with pytest.raises(OutcomeUnknownError, match="internal error"):
                await client.append(b"z")

    with_nodes(body)


def test_no_leader_is_definitely_not_written() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        for node in nodes.values():
            node.leader = node.leader_address = ""
        async with AsyncDLedgerClient(peers, group="g", timeout=0.3) as client:
            with pytest.raises(NotLeaderError):
                await client.append(b"x")

    with_nodes(body)


def test_get_missing_entry_and_status_with_an_unreachable_node() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        async with AsyncDLedgerClient({**peers, "n9": "127.0.0.1:9"}, group="g", rpc_timeout=0.5) as client:
            with pytest.raises(EntryNotFoundError):
                await client.get(5)
            status = {s.id: s for s in await client.status()}
            assert status["n2"].role == "leader" and status["n0"].role == "follower"
            assert status["n9"].reachable is False and status["n9"].error

    with_nodes(body)


def test_transfer_leadership_validates_target() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        async with AsyncDLedgerClient(peers, group="g") as client:
            await client.transfer_leadership("n1")
            with pytest.raises(InvalidRequestError, match="nobody"):
                await client.transfer_leadership("nobody")

    with_nodes(body)


def test_blocking_client_against_the_service() -> None:
    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        def use_blocking_client() -> list[int]:
            with DLedgerClient(peers, group="g") as client:
                out = [r.index for r in client.append_batch([b"1", b"2", b"3"])]
                assert client.get(3).data == b"3"
                with pytest.raises(EntryNotFoundError):
                    client.get(9)
                return out

        assert await asyncio.to_thread(use_blocking_client) == [1, 2, 3]

    with_nodes(body)


def test_a_get_on_a_stopping_node_is_not_a_storage_error_and_the_client_asks_another() -> None:
    """jepsen_like saw 'get failed' tracebacks and STORAGE_ERROR from nodes being stopped."""

    async def body(nodes: dict[str, FakeNode], peers: dict[str, str]) -> None:
        for node in nodes.values():
            node.log = [b"a", b"b"]
        nodes["n0"].stopping = True
        async with grpc.aio.insecure_channel(peers["n0"]) as channel:
            reply = await pb_grpc.DLedgerClientServiceStub(channel).Get(pb.GetRequest(group="g", index=1))
        assert reply.status == pb.STATUS_NOT_LEADER
        async with AsyncDLedgerClient({"n0": peers["n0"], "n1": peers["n1"]}, group="g") as client:
            assert (await client.get(2)).data == b"b"

    with_nodes(body)
