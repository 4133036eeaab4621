"""`AppendStream`: the asyncio client's fast path, many appends of many tasks over one gRPC stream.

One bidirectional `AppendStream` call to one node (the leader the client knows). `submit` queues a request
and returns a future; a writer task sends everything queued since its last write as one message, a reader
task settles futures from the answers (matched by `request_id`). So N concurrent appends cost a few stream
messages instead of N unary calls, on both sides.

Outcome rules (the same meanings as the unary path, see client_policy):
- an answer settles its future with the node's `AppendResponse`, whatever its status;
- a request still queued when the stream breaks was never sent: its future fails with `NotSent`, and the
  caller may send it again elsewhere;
- a request that was handed to the stream and not answered when the stream breaks, or by its deadline,
  has an unknown outcome: its future fails with `Unanswered`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from dledger._proto import dledger_pb2 as pb

__all__ = ["MESSAGE_BYTES", "AppendStream", "NotSent", "Unanswered"]

MESSAGE_BYTES = 1 << 20  # payload bytes per stream message (at least one request)


class NotSent(Exception):
    """The request never left this client (the stream broke first): nothing was written."""


class Unanswered(Exception):
    """The request was sent but no answer came (stream broken, or the deadline passed): outcome unknown."""


class AppendStream:
    """One stream to `node_id` (see the module docstring). Used by one event loop."""

    def __init__(self, stub: Any, node_id: str, group: str, metadata: Any = None) -> None:
        self.node_id = node_id
        self.group = group
        self.closed = False
        self._call = stub.AppendStream(metadata=metadata)
        self._pending: dict[int, asyncio.Future[pb.AppendResponse]] = {}
        self._queued: list[tuple[pb.AppendRequest, int]] = []  # and its payload bytes
        self._next_id = 1
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._tasks = [
            loop.create_task(self._write_loop(), name=f"append-stream-write-{node_id}"),
            loop.create_task(self._read_loop(), name=f"append-stream-read-{node_id}"),
        ]

    def submit(self, items: Sequence[bytes], timeout: float) -> asyncio.Future[pb.AppendResponse]:
        """Queue one append request; the future settles as the module docstring says."""
        future: asyncio.Future[pb.AppendResponse] = self._loop.create_future()
        if self.closed:
            future.set_exception(NotSent("the stream is closed"))
            return future
        request_id = self._next_id
        self._next_id += 1
        self._pending[request_id] = future
        request = pb.AppendRequest(group=self.group, data=items, request_id=request_id)
        # sized from `items`: reading `request.data` back would copy every payload out of the message
        self._queued.append((request, sum(map(len, items))))
        self._wake.set()
        timer = self._loop.call_later(timeout, self._expire, request_id)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def _expire(self, request_id: int) -> None:
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(Unanswered(f"no answer from {self.node_id} before the deadline"))

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queued:
                    batch = self._take_batch()
                    await self._call.write(pb.AppendStreamRequest(requests=batch))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._break(exc)

    def _take_batch(self) -> list[pb.AppendRequest]:
        """The queued requests for one message: all of them, or as many as fit in `MESSAGE_BYTES` (at least
        one), so that big payloads still pipeline (the node proposes each message's requests as they come)."""
        queued = self._queued
        size, n = 0, 0
        for _, nbytes in queued:
            size += nbytes
            n += 1
            if size >= MESSAGE_BYTES:
                break
        batch, self._queued = queued[:n], queued[n:]
        return [request for request, _ in batch]

    async def _read_loop(self) -> None:
        try:
            async for message in self._call:
                pending = self._pending
                for response in message.responses:
                    future = pending.pop(response.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(response)
            self._break(ConnectionError(f"{self.node_id} ended the stream"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        queued = {r.request_id for r, _ in self._queued}
        self._queued = []
        pending, self._pending = self._pending, {}
        for request_id, future in pending.items():
            if future.done():
                continue
            if request_id in queued:
                future.set_exception(NotSent(f"the stream to {self.node_id} broke first: {exc}"))
            else:
                future.set_exception(Unanswered(f"the stream to {self.node_id} broke: {exc}"))
        self._call.cancel()

    async def close(self) -> None:
        self._break(ConnectionError("closed by the client"))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
