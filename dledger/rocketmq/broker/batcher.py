"""Group commit for remoting sends: the sends that arrive while the event loop is busy go to the store as
one `put_messages` batch (one log entry), and each sender gets its own slice of the result.

Invariants:
- a sender's result says PUT_OK only when its messages are committed and applied (the batch's result);
  its msg ids, queue ids and queue offsets are those of its own messages, in order;
- a batch is at most `max_messages` messages and `max_bytes` body bytes; a send never waits for a later one:
  the batch is cut at the next turn of the event loop, or, while `max_inflight` batches are being put
  already, as soon as one of them is done (or the batch is full), so that under load each proposal carries
  the sends that arrived during the previous one's round trip;
- if a combined batch is refused as a whole for a reason one sender's messages can cause (MESSAGE_ILLEGAL,
  TOPIC_NOT_FOUND), each sender's messages are put again on their own, so one bad send never fails another.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from dledger.broker_adapter import Message, MessageStore, PutResult, PutStatus

__all__ = ["PutBatcher"]

_PER_SENDER = (PutStatus.MESSAGE_ILLEGAL, PutStatus.TOPIC_NOT_FOUND)


class PutBatcher:
    def __init__(
        self, store: MessageStore, max_messages: int = 512, max_bytes: int = 1 << 20, max_inflight: int = 1
    ) -> None:
        self.store = store
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_inflight = max_inflight
        self._inflight = 0
        self._pending: list[tuple[Sequence[Message], asyncio.Future[PutResult]]] = []
        self._bytes = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def put(self, msgs: Sequence[Message]) -> PutResult:
        size = sum(len(m.body) for m in msgs)
        if len(msgs) >= self.max_messages or size >= self.max_bytes:
            return await self.store.put_messages(msgs)
        count = sum(len(m) for m, _ in self._pending)
        if count + len(msgs) > self.max_messages or self._bytes + size > self.max_bytes:
            self._flush(full=True)
        future: asyncio.Future[PutResult] = asyncio.get_running_loop().create_future()
        self._pending.append((msgs, future))
        self._bytes += size
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self, full: bool = False) -> None:
        self._scheduled = False
        if not self._pending or (self._inflight >= self.max_inflight and not full):
            return  # the batch in flight flushes this one when it is done
        batch, self._pending, self._bytes = self._pending, [], 0
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._put(batch))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._pending and not self._scheduled:
            self._flush()

    async def _put(self, batch: list[tuple[Sequence[Message], asyncio.Future[PutResult]]]) -> None:
        try:
            if len(batch) == 1:
                results = [await self.store.put_messages(batch[0][0])]
            else:
                combined = await self.store.put_messages([m for msgs, _ in batch for m in msgs])
                if combined.status in _PER_SENDER:
                    results = [await self.store.put_messages(msgs) for msgs, _ in batch]
                else:
                    results = _split(combined, [len(msgs) for msgs, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # each sender answers it (the broker turns it into SYSTEM_ERROR)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _split(result: PutResult, counts: list[int]) -> list[PutResult]:
    if not result.ok:
        return [result] * len(counts)
    out = []
    at = 0
    for n in counts:
        ids, queues, offsets = (
            result.msg_ids[at : at + n],
            result.queue_ids[at : at + n],
            result.queue_offsets[at : at + n],
        )
        out.append(
            dataclasses.replace(
                result,
                msg_ids=ids,
                queue_ids=queues,
                queue_offsets=offsets,
                queue_id=queues[0],
                queue_offset=offsets[0],
            )
        )
        at += n
    return out
