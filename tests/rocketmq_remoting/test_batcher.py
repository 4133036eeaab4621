"""The remoting face's group commit (`PutBatcher`) against a scripted store: who shares a proposal, what each
sender gets back, and that one bad send never fails another."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dledger.broker_adapter import Message, PutResult, PutStatus
from dledger.rocketmq.broker.batcher import PutBatcher


class ScriptedStore:
    """`put_messages` answers after `release` is set (or at once); a body b"bad" makes the whole put illegal."""

    def __init__(self) -> None:
        self.puts: list[list[bytes]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.offset = 0

    async def put_messages(self, batch: Sequence[Message]) -> PutResult:
        self.puts.append([m.body for m in batch])
        await self.release.wait()
        if any(m.body == b"bad" for m in batch):
            return PutResult(PutStatus.MESSAGE_ILLEGAL, reason="bad body")
        first, self.offset = self.offset, self.offset + len(batch)
        offsets = tuple(range(first, first + len(batch)))
        return PutResult(
            PutStatus.PUT_OK,
            msg_ids=tuple(f"id-{m.body.decode()}" for m in batch),
            queue_id=0,
            queue_offset=first,
            queue_offsets=offsets,
            queue_ids=(0,) * len(batch),
        )


def _msgs(*bodies: str) -> list[Message]:
    return [Message(topic="T", body=b.encode()) for b in bodies]


def _batcher(store: ScriptedStore, **kw: int) -> PutBatcher:
    return PutBatcher(store, **kw)  # type: ignore[arg-type]


def test_sends_of_one_turn_share_one_put_and_each_gets_its_own_slice() -> None:
    async def main() -> None:
        store = ScriptedStore()
        b = _batcher(store)
        r1, r2, r3 = await asyncio.gather(b.put(_msgs("a")), b.put(_msgs("b", "c")), b.put(_msgs("d")))
        assert store.puts == [[b"a", b"b", b"c", b"d"]]
        assert (r1.msg_ids, r2.msg_ids, r3.msg_ids) == (("id-a",), ("id-b", "id-c"), ("id-d",))
        assert (r1.queue_offset, r2.queue_offsets, r3.queue_offset) == (0, (1, 2), 3)

    asyncio.run(main())


def test_sends_arriving_while_a_put_is_in_flight_wait_for_it_and_then_share_the_next() -> None:
    async def main() -> None:
        store = ScriptedStore()
        store.release.clear()
        b = _batcher(store, max_inflight=1)
        first = asyncio.ensure_future(b.put(_msgs("a")))
        await asyncio.sleep(0.01)
        later = [asyncio.ensure_future(b.put(_msgs(x))) for x in "bcd"]
        await asyncio.sleep(0.01)
        assert store.puts == [[b"a"]]  # b, c, d wait while a's put is in flight
        assert not any(f.done() for f in [first, *later])  # nobody is answered before the store answers
        store.release.set()
        results = await asyncio.gather(first, *later)
        assert store.puts == [[b"a"], [b"b", b"c", b"d"]]
        assert [r.msg_ids for r in results] == [("id-a",), ("id-b",), ("id-c",), ("id-d",)]

    asyncio.run(main())


def test_a_full_batch_is_put_even_while_another_is_in_flight() -> None:
    async def main() -> None:
        store = ScriptedStore()
        store.release.clear()
        b = _batcher(store, max_messages=3, max_inflight=1)
        first = asyncio.ensure_future(b.put(_msgs("a")))
        await asyncio.sleep(0.01)
        later = [asyncio.ensure_future(b.put(_msgs(x))) for x in "bcdef"]
        await asyncio.sleep(0.01)
        assert store.puts == [[b"a"], [b"b", b"c", b"d"]]  # b..d filled a batch; e, f wait
        store.release.set()
        await asyncio.gather(first, *later)
        assert store.puts == [[b"a"], [b"b", b"c", b"d"], [b"e", b"f"]]

    asyncio.run(main())


def test_one_illegal_send_does_not_fail_the_others_it_was_batched_with() -> None:
    async def main() -> None:
        store = ScriptedStore()
        b = _batcher(store)
        good, bad, other = await asyncio.gather(b.put(_msgs("a")), b.put(_msgs("bad")), b.put(_msgs("c")))
        assert store.puts[0] == [b"a", b"bad", b"c"]
        assert good.ok and other.ok and bad.status is PutStatus.MESSAGE_ILLEGAL
        assert (good.msg_ids, other.msg_ids) == (("id-a",), ("id-c",))

    asyncio.run(main())


def test_a_store_failure_reaches_every_sender_of_the_batch_and_the_next_batch_still_goes() -> None:
    async def main() -> None:
        store = ScriptedStore()
        b = _batcher(store)
        calls = 0
        put = store.put_messages

        async def failing_once(batch: Sequence[Message]) -> PutResult:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("store broke")
            return await put(batch)

        store.put_messages = failing_once  # type: ignore[method-assign]
        outcomes = await asyncio.gather(b.put(_msgs("a")), b.put(_msgs("b")), return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert (await b.put(_msgs("c"))).msg_ids == ("id-c",)

    asyncio.run(main())
