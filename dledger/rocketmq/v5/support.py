"""The endpoint's helpers: the apply notifier for long polling, the leader link.

- `ApplyNotifier` is a volatile state machine registered after the `MessageStore`: it starts at the
  store's applied index (nothing is replayed to it) and wakes every long-polling receiver once per batch of
  applied entries, after the store has applied them.
- `LeaderLink` keeps one gRPC channel per other replica's endpoint; a follower forwards writes over it with
  the client's own metadata plus `x-dledger-forwarded`, and a forwarded request is never forwarded again
  (so two replicas that disagree about the leader cannot bounce a request between them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import grpc.aio
from rocketmq.grpc_protocol import service_pb2_grpc as sg  # type: ignore[import-untyped]

from dledger.client.aio_client import channel_ready
from dledger.storage_api import Entry

__all__ = ["FORWARDED", "ApplyNotifier", "LeaderLink", "client_metadata"]

FORWARDED = "x-dledger-forwarded"


def client_metadata(pairs: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {k.lower(): v for k, v in pairs if isinstance(v, str)}


class ApplyNotifier:
    """A `StateMachine` that only signals "something was applied" to waiting receivers."""

    def __init__(self, applied: int) -> None:
        self._applied = applied
        self._event = asyncio.Event()
        self._scheduled = False

    def last_applied(self) -> int:
        return self._applied

    def apply(self, entry: Entry) -> None:
        self._applied = entry.index
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._scheduled = False
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        """Return after the next applied batch, or after `timeout` seconds."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))


class LeaderLink:
    """gRPC stubs of the other replicas' `MessagingService`, by node id."""

    def __init__(self, endpoints: Mapping[str, str], self_id: str) -> None:
        self.endpoints = dict(endpoints)
        self.self_id = self_id
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, Any] = {}

    def stub(self, node_id: str) -> Any:
        stub = self._stubs.get(node_id)
        if stub is None:
            channel = grpc.aio.insecure_channel(
                self.endpoints[node_id],
                options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
            )
            self._channels[node_id] = channel
            stub = self._stubs[node_id] = sg.MessagingServiceStub(channel)
        return stub

    async def connected(self, node_id: str, timeout: float) -> bool:
        """Whether the channel to `node_id` is (or within `timeout` becomes) READY. A request is forwarded
        only on a ready channel, so that a failure before it left is never mistaken for one after."""
        self.stub(node_id)
        return await channel_ready(self._channels[node_id], timeout)

    @staticmethod
    def metadata(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
        """The client's metadata to pass on (no transport headers), marked as forwarded."""
        out = [
            (k, v) for k, v in pairs if isinstance(v, str) and not k.startswith((":", "grpc-")) and k != "user-agent"
        ]
        out.append((FORWARDED, "1"))
        return out

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
        self._stubs.clear()
