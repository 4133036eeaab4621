"""A long-lived blocking client against real node processes that restart under it.

Guards against a client that sticks for good once its channels have lost their connections (a gRPC channel
whose connection dropped sits IDLE until something asks it to connect again), and checks that every append
the client was told succeeded is readable with the same bytes after a storm of restarts.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Iterator

import pytest

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError, NotWrittenError, OutcomeUnknownError
from tests.node.procs import ProcessGroup
from tests.support import wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def group(tmp_path: pathlib.Path) -> Iterator[ProcessGroup]:
    g = ProcessGroup(tmp_path)
    yield g
    g.stop_all()


def _restart(group: ProcessGroup, node_id: str) -> None:
    """Kill one node, start it again, and wait until the group has a leader and the node answers."""
    group.kill(node_id)
    group.start(node_id)
    group.wait_for_leader(timeout=60)
    wait_for(lambda: group.statuses()[node_id].reachable, 60, f"{node_id} answering again", poll=0.05)


def test_the_client_keeps_appending_after_every_node_restarted_once(group: ProcessGroup) -> None:
    group.start_all()
    group.wait_for_leader(timeout=60)
    with group.client(timeout=20) as client:
        client.append(b"before")
        # a connection from this client to every node
        wait_for(lambda: all(n.reachable for n in client.status(timeout=5)), 60, "every node answering")
        for node_id in list(group.peers):
            _restart(group, node_id)
        # every channel of this client lost its connection once; a fresh client would work at once
        result = client.append(b"after")
        assert client.get(result.index).data == b"after"


class _Appender(threading.Thread):
    """Appends distinct payloads in a loop until stopped; keeps what the client acknowledged."""

    def __init__(self, client: DLedgerClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.acked: dict[int, bytes] = {}
        self.unknown = 0
        self.not_written = 0
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        k = 0
        try:
            while not self.stop.is_set():
                data = f"storm-{k}".encode()
                k += 1
                try:
                    self.acked[self.client.append(data).index] = data
                except OutcomeUnknownError:
                    self.unknown += 1
                except NotWrittenError:
                    self.not_written += 1
        except BaseException as exc:  # anything else is a bug: the test reports it
            self.failure = exc


def test_a_long_lived_client_keeps_working_through_a_storm_of_restarts(group: ProcessGroup) -> None:
    group.start_all()
    group.wait_for_leader(timeout=60)
    client = group.client(timeout=10)
    appender = _Appender(client)
    try:
        appender.start()
        wait_for(lambda: len(appender.acked) >= 20, 60, "appends before the storm")
        for _ in range(3):
            for node_id in list(group.peers):
                before = len(appender.acked)
                _restart(group, node_id)
                # the client gets through again after each restart, not only at the end
                wait_for(lambda b=before: len(appender.acked) > b, 60, f"an append after restarting {node_id}")
    finally:
        appender.stop.set()
        appender.join(60)
    try:
        assert appender.failure is None, appender.failure
        assert not appender.is_alive()
        assert len(appender.acked) >= 30
        for index, data in sorted(appender.acked.items()):
            assert _read(client, index) == data, f"entry {index}"
    finally:
        client.close()


def _read(client: DLedgerClient, index: int) -> bytes:
    def attempt() -> bytes | None:
        try:
            return client.get(index).data
        except DLedgerError:
            return None

    data = wait_for(attempt, 60, f"reading entry {index}")
    assert isinstance(data, bytes)
    return data


@pytest.mark.parametrize("streaming", [True, False])
def test_a_long_lived_asyncio_client_keeps_working_through_a_storm_of_restarts(
    group: ProcessGroup, streaming: bool
) -> None:
    """The same storm under `AsyncDLedgerClient`, over its append stream and over unary calls."""
    group.start_all()
    group.wait_for_leader(timeout=60)

    async def main() -> None:
        async with AsyncDLedgerClient(
            group.peers, group=group.group, timeout=10, rpc_timeout=5, streaming=streaming
        ) as client:
            acked: dict[int, bytes] = {}
            stop = asyncio.Event()

            async def append_loop() -> None:
                k = 0
                while not stop.is_set():
                    data = f"storm-{k}".encode()
                    k += 1
                    try:
                        acked[(await client.append(data)).index] = data
                    except (OutcomeUnknownError, NotWrittenError):
                        await asyncio.sleep(0)

            async def wait_for_acks(count: int, what: str) -> None:
                for _ in range(6000):
                    if len(acked) >= count or appender.done():
                        break
                    await asyncio.sleep(0.01)
                assert len(acked) >= count, what

            appender = asyncio.get_running_loop().create_task(append_loop())
            try:
                await wait_for_acks(20, "appends before the storm")
                for _ in range(3):
                    for node_id in list(group.peers):
                        before = len(acked)
                        await asyncio.to_thread(_restart, group, node_id)
                        await wait_for_acks(before + 1, f"an append after restarting {node_id}")
            finally:
                stop.set()
                await asyncio.wait_for(appender, 60)  # re-raises anything the loop did not expect
            for index, data in sorted(acked.items()):
                assert (await client.get(index, timeout=60)).data == data, f"entry {index}"

    asyncio.run(main())
