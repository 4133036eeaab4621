"""Storage failures while applying: nothing partial is ever committed, and a failed commit stops the store loudly.

An error while re-applying a batch after a full map must not leave a partial transaction to be committed
under an older `applied`, and a failed commit in the `call_soon` flush must not answer PUT_OK: it fences the
node. These tests run the applier inside an event loop, so the batch path is exercised."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from typing import Any

import lmdb
import pytest

from dledger.broker_adapter import Message, MessageStore, PutStatus, StoreOptions
from dledger.broker_adapter import commands as c
from dledger.broker_adapter.apply import Applier
from dledger.broker_adapter.prepare import Preparer
from dledger.storage_api import Entry
from tests.broker_adapter.group_util import FakeClock, dump
from tests.broker_adapter.single_util import run_single
from tests.support import wait_for_async


def _put(now: int) -> bytes:
    _, put, _ = Preparer(StoreOptions(), lambda name: None).prepare([Message("T", b"x", queue_id=0)], now)
    return c.encode_put(0, now, put.topics, put.metas, put.blobs)


def _failing_put(store: MessageStore, second: BaseException) -> list[int]:
    """Make the applier's PUT write its records, then raise MapFullError; on the retry (after the map grew),
    write them again and raise `second`."""
    calls = [0]
    real = Applier._put

    def put(self: Applier, txn: Any, entry: Entry, report: bool) -> Any:
        calls[0] += 1
        real(self, txn, entry, report)
        raise (lmdb.MapFullError("full") if calls[0] == 1 else second)

    store.applier._put = put.__get__(store.applier)  # type: ignore[method-assign]
    return calls


def _cq_count(store: MessageStore) -> int:
    return len(dump(store)["cq"])


def test_storage_error_while_reapplying_after_a_full_map_commits_nothing_of_the_entry(tmp_path: pathlib.Path) -> None:
    store = MessageStore(tmp_path / "s")

    async def main() -> None:
        store.apply(Entry(1, 1, c.encode_command(c.CreateTopic(0, 1000, "T", 1, 0))))
        await asyncio.sleep(0)  # committed
        calls = _failing_put(store, lmdb.DiskError("simulated I/O error"))
        with pytest.raises(lmdb.DiskError):
            store.apply(Entry(2, 1, _put(1001)))
        assert calls[0] == 2 and store.applier._txn is None
        await asyncio.sleep(0)  # the flush scheduled by entry 2's apply finds nothing to commit
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
        assert store.last_applied() == 1
        assert _cq_count(store) == 0
    finally:
        store.close()


def test_non_storage_error_while_reapplying_skips_the_entry_whole(tmp_path: pathlib.Path) -> None:
    store = MessageStore(tmp_path / "s")
    size = store.tables.map_size

    async def main() -> None:
        store.apply(Entry(1, 1, c.encode_command(c.CreateTopic(0, 1000, "T", 1, 0))))
        calls = _failing_put(store, ValueError("a bug"))
        store.apply(Entry(2, 1, _put(1001)))
        assert calls[0] == 2
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
        assert store.last_applied() == 2 and store.tables.map_size == 2 * size
        assert _cq_count(store) == 0 and store.applier.failed is None
    finally:
        store.close()


class _FailingCommitTxn:
    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def commit(self) -> None:
        self._txn.abort()
        raise lmdb.DiskError("simulated ENOSPC at commit")


class _Env:
    """Wraps the LMDB environment: while `fail`, write transactions fail at commit."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def begin(self, write: bool = False, **kw: Any) -> Any:
        txn = self._env.begin(write=write, **kw)
        return _FailingCommitTxn(txn) if write and self.fail else txn


def test_a_failed_batch_commit_is_not_acknowledged_and_stops_the_store(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        first = await store.put_message(Message("T", b"first", queue_id=0))
        assert first.ok
        env = _Env(store.tables.env)
        store.tables.env = env
        env.fail = True
        try:
            second = await store.put_message(Message("T", b"second", queue_id=0))
        finally:
            env.fail = False
            store.tables.env = env._env
        assert second.status is not PutStatus.PUT_OK
        assert store.max_offset("T", 0) == 1
        assert store.applier.failed is not None
        refused = await store.put_message(Message("T", b"third", queue_id=0))
        assert refused.status is PutStatus.SERVICE_NOT_AVAILABLE
        with contextlib.suppress(Exception):  # the next apply raises: the node fences (the append may fail)
            await store._srv().append([c.encode_command(c.Tick(0, clock()))])
        await wait_for_async(lambda: store._srv().node.role == "fenced", what="the node fenced")

    run_single(tmp_path, body)
