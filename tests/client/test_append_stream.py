"""The streaming append path: the client's `AppendStream` (outcome rules) and the service's `AppendStream`."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dledger._proto import dledger_pb2 as pb
from dledger._proto import dledger_pb2_grpc as pb_grpc
from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.append_stream import AppendStream, NotSent, Unanswered
from dledger.client.client_policy import InvalidRequestError
from dledger.storage_api import EntryKind
from tests.node.cluster_util import LocalGroup, run_group


class FakeCall:
    """A stream-stream call whose answers the test controls; `written` keeps every request message."""

    def __init__(self) -> None:
        self.written: list[pb.AppendStreamRequest] = []
        self.answers: asyncio.Queue[pb.AppendStreamResponse | BaseException] = asyncio.Queue()
        self.cancelled = False
        self.write_gate = asyncio.Event()
        self.write_gate.set()

    async def write(self, message: pb.AppendStreamRequest) -> None:
        await self.write_gate.wait()
        self.written.append(message)

    def __aiter__(self) -> AsyncIterator[pb.AppendStreamResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[pb.AppendStreamResponse]:
        while True:
            item = await self.answers.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    def __init__(self) -> None:
        self.call = FakeCall()

    def AppendStream(self, metadata: object = None) -> FakeCall:
        return self.call


def test_requests_of_many_tasks_share_messages_and_answers_match_by_id() -> None:
    async def main() -> None:
        stub = FakeStub()
        stream = AppendStream(stub, "n0", "g")
        futures = [stream.submit([f"v{k}".encode()], 5.0) for k in range(10)]
        await asyncio.sleep(0)  # the writer runs once for everything queued
        await asyncio.sleep(0)
        assert len(stub.call.written) == 1 and len(stub.call.written[0].requests) == 10
        ids = [r.request_id for r in stub.call.written[0].requests]
        # answers come back in any order, several per message
        responses = [pb.AppendResponse(status=pb.STATUS_OK, first_index=100 + i, request_id=i) for i in reversed(ids)]
        await stub.call.answers.put(pb.AppendStreamResponse(responses=responses))
        results = await asyncio.gather(*futures)
        assert [r.first_index for r in results] == [100 + i for i in ids]
        await stream.close()

    asyncio.run(main())


def test_a_broken_stream_fails_sent_requests_as_unanswered_and_queued_ones_as_not_sent() -> None:
    async def main() -> None:
        stub = FakeStub()
        stream = AppendStream(stub, "n0", "g")
        sent = stream.submit([b"a"], 5.0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(stub.call.written) == 1
        stub.call.write_gate.clear()  # the next write blocks: its requests have not left
        stuck = stream.submit([b"b"], 5.0)
        await asyncio.sleep(0)
        queued = stream.submit([b"c"], 5.0)  # still queued behind the blocked write
        await stub.call.answers.put(ConnectionResetError("peer went away"))
        with pytest.raises(Unanswered):
            await sent
        with pytest.raises(Unanswered):  # handed to a write that may have left: unknown
            await stuck
        with pytest.raises(NotSent):
            await queued
        assert stream.closed and stub.call.cancelled
        with pytest.raises(NotSent):
            await stream.submit([b"d"], 5.0)
        await stream.close()

    asyncio.run(main())


def test_a_request_without_an_answer_by_its_deadline_is_unanswered() -> None:
    async def main() -> None:
        stub = FakeStub()
        stream = AppendStream(stub, "n0", "g")
        future = stream.submit([b"a"], 0.05)
        with pytest.raises(Unanswered):
            await future
        # a late answer for it is ignored, the stream keeps working
        late = stub.call.written[0].requests[0].request_id
        nxt = stream.submit([b"b"], 5.0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ok = pb.AppendResponse(
            status=pb.STATUS_OK, first_index=7, request_id=stub.call.written[1].requests[0].request_id
        )
        await stub.call.answers.put(pb.AppendStreamResponse(responses=[pb.AppendResponse(request_id=late), ok]))
        assert (await nxt).first_index == 7
        await stream.close()

    asyncio.run(main())


def _data(group: LocalGroup, node_id: str) -> list[bytes]:
    return [e.data for e in group.machines[node_id].applied if e.kind == EntryKind.NORMAL]


def test_streamed_appends_through_a_real_group_survive_a_leader_change(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader = await group.wait_for_leader()
        async with AsyncDLedgerClient(group.peers, group="t") as client:
            await client.append(b"first")  # unary: finds the leader
            results = await asyncio.gather(*(client.append(f"s{k}".encode()) for k in range(200)))
            stream = client._stream
            assert stream is not None and stream.node_id == leader and not stream.closed
            indexes = sorted(r.index for r in results)
            assert indexes == list(range(indexes[0], indexes[0] + 200))
            other = next(i for i in group.peers if i != leader)
            await client.transfer_leadership(other)
            await group.wait_for(lambda: group.leader() == other, what="the new leader")
            # the old leader answers NOT_LEADER: those appends go the unary way, later ones over a new stream
            more = await asyncio.gather(*(client.append(f"t{k}".encode()) for k in range(25)))
            more += await asyncio.gather(*(client.append(f"t{k}".encode()) for k in range(25, 50)))
            assert client._stream is not None and client._stream.node_id == other
            assert len({r.index for r in more}) == 50 and min(r.index for r in more) > indexes[-1]
            with pytest.raises(InvalidRequestError):
                await client.append(b"x" * (group.servers[other].config.max_entry_bytes + 1))
        expected = {b"first", *(f"s{k}".encode() for k in range(200)), *(f"t{k}".encode() for k in range(50))}
        for node_id in group.peers:
            await group.wait_for(lambda n=node_id: set(_data(group, n)) == expected, what=f"{node_id} applied")
            assert len(_data(group, node_id)) == len(expected)  # each append stored exactly once

    run_group(tmp_path, body)


def test_the_service_answers_every_request_once_even_after_the_client_half_closes(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        import grpc.aio

        leader = await group.wait_for_leader()
        async with grpc.aio.insecure_channel(group.peers[leader]) as channel:
            stub = pb_grpc.DLedgerClientServiceStub(channel)
            requests = [
                pb.AppendRequest(group="t", data=[b"ok1"], request_id=1),
                pb.AppendRequest(group="t", data=[], request_id=2),  # invalid: no entry
                pb.AppendRequest(group="other", data=[b"x"], request_id=3),  # another group
                pb.AppendRequest(group="t", data=[b"ok2", b"ok3"], request_id=4),
            ]

            async def gen() -> AsyncIterator[pb.AppendStreamRequest]:
                yield pb.AppendStreamRequest(requests=requests[:2])
                yield pb.AppendStreamRequest(requests=requests[2:])

            answers: dict[int, Any] = {}
            async for message in stub.AppendStream(gen(), timeout=10):
                for r in message.responses:
                    assert r.request_id not in answers
                    answers[r.request_id] = r
        assert set(answers) == {1, 2, 3, 4}
        assert answers[1].status == pb.STATUS_OK and answers[4].status == pb.STATUS_OK
        assert answers[4].first_index == answers[1].first_index + 1
        assert answers[2].status == pb.STATUS_INVALID and answers[3].status == pb.STATUS_WRONG_GROUP

    run_group(tmp_path, body)
