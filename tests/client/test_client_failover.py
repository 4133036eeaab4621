"""Client-observed failover against real node processes: after a SIGKILL of the leader, both clients move
past the dead node's channel at once (nothing is sent to it) instead of waiting out their RPC timeout there.

The clients here have an RPC timeout and a deadline far longer than the test's own patience, so a client that
waited on the dead node's channel would fail the test; no wall-clock figure is asserted (see bench.failover).
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client import AppendResult, DLedgerClient
from dledger.client.client_policy import Call, DLedgerError, RpcOutcome
from tests.node.procs import ProcessGroup
from tests.support import wait_for

pytestmark = pytest.mark.process

PATIENT = 600.0  # the clients' RPC timeout and deadline: far past the test's own limits
TEST_LIMIT = 120.0  # how long the test waits for an acknowledged append after the kill


@pytest.fixture
def group(tmp_path: pathlib.Path) -> Iterator[ProcessGroup]:
    g = ProcessGroup(tmp_path)
    g.start_all()
    yield g
    g.stop_all()


def _record_calls(client: Any, calls: list[tuple[str, Any]]) -> None:
    """Wrap the client's I/O step to record (node, outcome) of every call its policy makes."""
    inner = client._call
    if asyncio.iscoroutinefunction(inner):

        async def acall(call: Call) -> Any:
            result = await inner(call)
            calls.append((call.node_id, result))
            return result

        client._call = acall
    else:

        def call_(call: Call) -> Any:
            result = inner(call)
            calls.append((call.node_id, result))
            return result

        client._call = call_


def _check_dead_node_was_skipped(calls: list[tuple[str, Any]], dead: str) -> None:
    to_dead = [outcome for node_id, outcome in calls if node_id == dead]
    # gRPC notices the closed connection on its own threads: a request sent just before it did fails after
    # sending (an unknown outcome, which is right); every later attempt found the channel down, sent nothing
    if to_dead and to_dead[0] is RpcOutcome.FAILED_AFTER_SEND:
        to_dead = to_dead[1:]
    assert all(outcome is RpcOutcome.NOT_CONNECTED for outcome in to_dead), to_dead
    assert calls[-1][0] != dead


def test_blocking_client_skips_a_dead_leaders_channel_at_once(group: ProcessGroup) -> None:
    group.wait_for_leader(timeout=60)
    with DLedgerClient(group.peers, group=group.group, timeout=PATIENT, rpc_timeout=PATIENT) as client:
        wait_for(lambda: all(n.reachable for n in client.status(timeout=5)), 60, "every node answering")
        client.append(b"before")
        dead = client.leader
        assert dead is not None
        calls: list[tuple[str, Any]] = []
        _record_calls(client, calls)
        group.kill(dead)
        acked: list[AppendResult] = []
        failures: list[BaseException] = []

        def append_until_acked() -> None:
            while not acked:
                try:
                    acked.append(client.append(b"after"))
                except DLedgerError as exc:
                    failures.append(exc)

        worker = threading.Thread(target=append_until_acked, daemon=True)
        worker.start()
        worker.join(TEST_LIMIT)
        assert acked, f"no acknowledged append within {TEST_LIMIT} s of the kill (failures: {failures})"
        assert client.leader != dead
        _check_dead_node_was_skipped(calls, dead)
        assert client.get(acked[0].index).data == b"after"


@pytest.mark.parametrize("streaming", [True, False])
def test_asyncio_client_skips_a_dead_leaders_channel_at_once(group: ProcessGroup, streaming: bool) -> None:
    group.wait_for_leader(timeout=60)

    async def main() -> None:
        async with AsyncDLedgerClient(
            group.peers, group=group.group, timeout=PATIENT, rpc_timeout=PATIENT, streaming=streaming
        ) as client:
            for _ in range(600):
                if all(n.reachable for n in await client.status(timeout=5)):
                    break
                await asyncio.sleep(0.1)
            await client.append(b"before")
            await client.append(b"before, on the stream once it is open")
            dead = client.leader
            assert dead is not None
            calls: list[tuple[str, Any]] = []
            _record_calls(client, calls)
            group.kill(dead)

            async def append_until_acked() -> AppendResult:
                while True:
                    try:
                        return await client.append(b"after")
                    except DLedgerError:
                        pass

            result = await asyncio.wait_for(append_until_acked(), TEST_LIMIT)
            assert client.leader != dead
            _check_dead_node_was_skipped(calls, dead)
            assert (await client.get(result.index)).data == b"after"

    asyncio.run(main())
