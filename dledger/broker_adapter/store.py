"""`MessageStore`: a RocketMQ-style message store on a `DLedgerServer`'s replicated log.

It is the node's state machine (`last_applied` / `apply`, see `apply.py`; `snapshot` / `restore` of every
table, see `image.py`) and the broker's API. Writes (put, topics, offsets, pop receive / ack /
change-invisible, end transaction) are commands proposed on the leader once it is *master*; reads (get,
queries, offsets) are served by any replica from LMDB plus the log: message bodies live only in the log, so a
body whose entry is gone (retention, or a log that starts after a restored snapshot) reads as removed.

Invariants:
- master means: this node leads AND it has applied the no-op entry of its own term, so everything
  committed before its term is applied (RocketMQ's DLedgerRoleChangeHandler waits the same way);
- a result says `PUT_OK` / `OK` only after the command is committed on a quorum and applied here;
- every value that apply needs from the proposer (time, queue choice, message id, attempts limit) is in the
  command, so replicas agree whatever their clocks and options;
- the store never writes half a batch: a batch is one log entry, refused whole or applied whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from dledger.broker_adapter import commands as c
from dledger.broker_adapter.admin import AdminMixin
from dledger.broker_adapter.apply import Applier, PutOutcome
from dledger.broker_adapter.image import load_image, write_image
from dledger.broker_adapter.message import Message, MessageType
from dledger.broker_adapter.options import BROKER_KEYS, StoreOptions, with_entry_room
from dledger.broker_adapter.popapi import PopMixin
from dledger.broker_adapter.prepare import Preparer
from dledger.broker_adapter.reader import Reader, parse_tag_filter
from dledger.broker_adapter.results import (
    GetResult,
    PutResult,
    PutStatus,
    StoredMessage,
    StoreError,
    TopicConfig,
    check_name,
)
from dledger.broker_adapter.retention import Retention, RetentionReport
from dledger.broker_adapter.tables import MAX_ID_BYTES, Tables
from dledger.node.config import NodeConfig, load_properties
from dledger.node.errors import BusyError, NodeNotLeaderError, NodeOutcomeUnknownError, NodeStoppedError
from dledger.node.server import DLedgerServer
from dledger.storage_api import Entry

__all__ = ["MessageStore"]

log = logging.getLogger(__name__)


class MessageStore(AdminMixin, PopMixin):
    """One replica's message store. Register it as a state machine of its `DLedgerServer` (or use `create`)."""

    def __init__(self, store_dir: Path | str, options: StoreOptions | None = None) -> None:
        self.options = options or StoreOptions()
        self.store_dir = Path(store_dir)
        self.tables = Tables(self.store_dir / "broker", map_size=self.options.map_size)
        self.applier = Applier(self.tables)
        self.applier.on_noop = self._on_noop
        self.server: DLedgerServer | None = None
        self.reader: Reader | None = None
        self._own_server = False
        self._master = False
        self.master_index = 0  # the own-term no-op whose application made this store master
        self._role: str | None = None
        self._announced: str | None = None  # the last role announced to the callbacks ("master" / "slave")
        self._term = 0
        self._on_master: list[Callable[[], None]] = []
        self._on_slave: list[Callable[[], None]] = []
        self._nonces = itertools.count(int.from_bytes(os.urandom(6), "big") << 8)
        self._tasks: list[asyncio.Task[None]] = []
        self.retention: Retention | None = None
        self._clock_anchor: tuple[int, float] | None = None  # (last stamp taken from the clock, monotonic s)
        self._ahead_since: float | None = None  # monotonic s since the clock has been implausibly ahead

    # ---- wiring ----
    @classmethod
    def create(
        cls, config: NodeConfig, options: StoreOptions | None = None, *, seed: int | None = None
    ) -> MessageStore:
        """A store on `config.store_dir` with its own `DLedgerServer`; `await start()` starts both."""
        if options is None:
            options = StoreOptions(file_reserved_hours=config.file_reserved_hours)
        store = cls(config.store_dir, options)
        store.bind(DLedgerServer(config, [store], seed=seed))
        store._own_server = True
        return store

    @classmethod
    def from_file(cls, path: str | Path, *, seed: int | None = None, **overrides: Any) -> MessageStore:
        """A store and its server from a RocketMQ broker.conf: the node keys (`dLegerPeers`, ...) and the
        broker keys in `BROKER_KEYS` (`autoCreateTopicEnable`, `diskMaxUsedSpaceRatio`, ...)."""
        props = load_properties(path)
        config = NodeConfig.from_properties(props, other_keys=BROKER_KEYS)
        overrides.setdefault("file_reserved_hours", config.file_reserved_hours)
        options = StoreOptions.from_properties(props, **overrides)
        return cls.create(with_entry_room(config, options), options, seed=seed)

    def bind(self, server: DLedgerServer) -> None:
        """Attach to the server this store is registered on (before `server.start()`)."""
        self.server = server
        self.reader = Reader(self.tables, server.get, lambda: int(server.status().first_index) or 1)
        self.applier.on_queues_dropped = self.reader.forget
        self._preparer = Preparer(self.options, self.reader.topic)
        self.retention = Retention(self, server)
        server.on_role_change(self._on_role_change)

    async def start(self) -> None:
        """Start the server (if `create` made it) and the master's timer and the retention tasks.

        Raises `RuntimeError` if the log was compacted past what these tables hold (e.g. the LMDB files were
        lost after retention ran) and no snapshot restored them."""
        srv = self._srv()
        if self._own_server:
            await srv.start()
        first = int(srv.status().first_index)
        if first > self.last_applied() + 1:
            if self._own_server:
                await srv.stop()
            raise RuntimeError(
                f"the broker tables hold entries up to {self.last_applied()} but the log starts at {first}: "
                "they cannot be rebuilt from the log (restore a snapshot, or copy the store from another replica)"
            )
        self._tasks.append(asyncio.get_running_loop().create_task(self._timer_loop()))
        if self.options.retention_interval_s > 0:
            self._tasks.append(asyncio.get_running_loop().create_task(self._retention_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.retention is not None:
            await self.retention.close()
        if self._own_server and self.server is not None:
            await self.server.stop()
            self.close()

    def close(self) -> None:
        """Commit and close the tables. With a server of your own (`bind`), call it after `server.stop()`."""
        if self.tables.env is not None:
            with contextlib.suppress(Exception):
                self.applier.flush()
            self.tables.sync()
            self.tables.close()

    def on_master(self, callback: Callable[[], None]) -> None:
        """`callback()` when this replica becomes master (leads and has applied everything committed); at once
        if it is master already."""
        self._on_master.append(callback)
        if self._announced == "master":
            self._fire([callback])

    def on_slave(self, callback: Callable[[], None]) -> None:
        """`callback()` when this replica stops being master (or first learns it is a follower); at once if it
        is known to be a slave already."""
        self._on_slave.append(callback)
        if self._announced == "slave":
            self._fire([callback])

    @property
    def is_master(self) -> bool:
        return self._master

    # ---- StateMachine, SnapshottingStateMachine ----
    def last_applied(self) -> int:
        return self.tables.applied()

    def apply(self, entry: Entry) -> None:
        self.applier.apply(entry)

    def snapshot(self, out: BinaryIO) -> int:
        """Stream an image of every table (`image.py`) to `out`; returns its index: the last entry applied (the
        no-ops and foreign entries after the last command changed nothing, so they count). Bodies are not in
        it: they stay in the log."""
        self._check_intact()
        self.applier.flush()  # the open batch, so the image has every applied entry
        index = max(self.tables.applied(), self.applier.last_index)
        write_image(self.tables, index, out)
        return index

    def restore(self, src: BinaryIO, index: int) -> None:
        """Replace every table by the image in `src`, taken at `index`: built beside the live tables, checked
        whole, then switched to atomically (`Tables.switch_to`). A bad image raises `SnapshotError` and leaves
        the tables as they were. Bodies of entries up to `index` that this replica's log no longer holds read
        as removed, as after retention."""
        self._check_intact()
        self.applier.flush()  # what was applied stays, should the image be refused
        staged = load_image(src, index, self.tables.staging_path(), self.tables.map_size)
        self.tables.switch_to(staged)
        self.applier.restored(index)
        if self.reader is not None:
            self.reader.forget()
        log.info("broker tables restored from a snapshot image at index %d", index)

    def _check_intact(self) -> None:
        if self.applier.failed is not None:
            raise RuntimeError(f"the broker tables failed earlier: {self.applier.failed}")

    # ---- roles ----
    def _on_role_change(self, role: str, term: int, leader_id: str | None) -> None:
        self._term = term
        was = self._role
        self._role = "leader" if role == "leader" else "slave"
        if role != "leader" and (self._master or was is None):
            self._master = False
            self._announced = "slave"
            self._fire(self._on_slave)

    def _on_noop(self, entry: Entry) -> None:
        if self._role == "leader" and entry.term == self._term and not self._master:
            self._master = True
            self.master_index = entry.index
            self._announced = "master"
            self._fire(self._on_master)

    def _fire(self, callbacks: Iterable[Callable[[], None]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("role callback failed")

    # ---- proposing ----
    def _srv(self) -> DLedgerServer:
        if self.server is None:
            raise RuntimeError("bind(server) first")
        return self.server

    def _rd(self) -> Reader:
        if self.reader is None:
            raise RuntimeError("bind(server) first")
        return self.reader

    def leader_address(self) -> str:
        srv = self._srv()
        leader = srv.leader_id
        return srv.config.peers.get(leader, "") if leader else ""

    def _check_master(self) -> None:
        if self.applier.failed is not None:
            why = f"the broker tables failed (the store refuses work): {self.applier.failed}"
            raise StoreError(PutStatus.SERVICE_NOT_AVAILABLE, why)
        if self._master:
            return
        srv = self._srv()
        if srv.is_leader:
            raise StoreError(PutStatus.SERVICE_NOT_AVAILABLE, "the leader is still applying the log (not master yet)")
        raise StoreError(PutStatus.NOT_LEADER, f"not the master; the leader is {srv.leader_id}", self.leader_address())

    async def _propose(self, items: Sequence[bytes], nonce: int) -> tuple[int, Any]:
        """Append, wait for apply here; (first index, the applier's outcome for `nonce`)."""
        srv = self._srv()
        self.applier.wanted.add(nonce)
        try:
            async with asyncio.timeout(self.options.put_timeout_s):
                first, _ = await srv.append(items)
            return first, self.applier.outcomes.pop(nonce, None)
        except NodeNotLeaderError as exc:
            raise StoreError(PutStatus.NOT_LEADER, str(exc), exc.hint.leader_address) from None
        except BusyError as exc:
            raise StoreError(PutStatus.SERVICE_NOT_AVAILABLE, f"busy: {exc}") from None
        except NodeStoppedError as exc:
            raise StoreError(PutStatus.SERVICE_NOT_AVAILABLE, str(exc)) from None
        except (NodeOutcomeUnknownError, TimeoutError) as exc:
            raise StoreError(PutStatus.FLUSH_OR_REPLICA_TIMEOUT, f"outcome unknown: {exc!r}") from None
        finally:
            self.applier.wanted.discard(nonce)
            self.applier.outcomes.pop(nonce, None)

    def stamp_time(self) -> int:
        """The epoch ms to stamp into a command: the clock, unless it jumped forward implausibly (more than
        `max_clock_ahead_ms` beyond the last stamp plus the monotonic time since): then the last stamp plus
        that elapsed time (a warning is logged), until the clock has stayed ahead for `clock_jump_accept_s`
        (a correction, accepted). Replicas keep `log_time` as a running maximum of the stamps, so one wrong
        stamp would otherwise hold redelivery and delayed messages back for as long as the jump."""
        wall, mono = self.options.clock(), time.monotonic()
        anchor = self._clock_anchor
        expected = anchor[0] + int((mono - anchor[1]) * 1000) if anchor is not None else wall
        if wall <= expected + self.options.max_clock_ahead_ms:
            self._clock_anchor, self._ahead_since = (wall, mono), None
            return wall
        if self._ahead_since is None:
            self._ahead_since = mono
            log.warning("the clock jumped %d ms ahead; stamping %d instead until it settles", wall - expected, expected)
        elif mono - self._ahead_since >= self.options.clock_jump_accept_s:
            log.warning("the clock has stayed %d ms ahead: accepting it", wall - expected)
            self._clock_anchor, self._ahead_since = (wall, mono), None
            return wall
        return max(expected, self.applier.log_time)

    async def _command(self, make: Callable[[int, int], c.Command]) -> Any:
        self._check_master()
        nonce = next(self._nonces)
        try:
            item = c.encode_command(make(nonce, self.stamp_time()))
        except c.CommandError as exc:
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, str(exc)) from None
        _, outcome = await self._propose([item], nonce)
        return outcome

    # ---- topics and offsets ----
    async def create_topic(
        self, topic: str, queue_count: int = 8, message_type: MessageType = MessageType.NORMAL
    ) -> TopicConfig:
        """Create a topic, or grow its queue count (never shrinks; the type is fixed at creation).

        A FIFO topic's queue count cannot grow: message groups are mapped to queues by hash modulo the count,
        so growth would move a group to another queue while its older messages wait in the old one, and the
        group's order (one in flight at a time, in order) would break. Create a new topic instead."""
        check_name("topic", topic)
        if not 1 <= queue_count <= 1024:
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"queue count {queue_count} is not in 1..1024")
        current = self.topic(topic)
        if current is not None and current.message_type == MessageType.FIFO and queue_count > current.queue_count:
            raise StoreError(
                PutStatus.MESSAGE_ILLEGAL,
                f"FIFO topic {topic!r} has {current.queue_count} queues; growing it would break message group order",
            )
        cfg = await self._command(lambda n, now: c.CreateTopic(n, now, topic, queue_count, message_type))
        if not isinstance(cfg, TopicConfig):
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"topic {topic!r} was not created")
        return cfg

    def topic(self, name: str) -> TopicConfig | None:
        return self._rd().topic(name)

    def topics(self) -> list[TopicConfig]:
        return self._rd().topics()

    async def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """Replicate a consumer group's offset (survives failover)."""
        check_name("group", group)
        check_name("topic", topic)
        if queue_id < 0 or offset < 0:
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, "queue id and offset must be >= 0")
        await self._command(lambda n, now: c.CommitOffset(n, now, group, topic, queue_id, offset))

    def committed_offset(self, group: str, topic: str, queue_id: int) -> int:
        """The group's committed offset, or -1 if it never committed one."""
        return self._rd().committed_offset(group, topic, queue_id)

    async def end_transaction(self, msg_id: str, commit: bool) -> bool:
        """Commit (make visible) or roll back a prepared message; False if no such prepared message."""
        if not 0 < len(msg_id.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES:
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"a message id is 1..{MAX_ID_BYTES} bytes")
        found: bool = await self._command(lambda n, now: c.EndTransaction(n, now, msg_id, commit))
        return found

    # ---- put ----
    async def put_message(self, msg: Message) -> PutResult:
        return await self.put_messages([msg])

    async def put_messages(self, batch: Sequence[Message]) -> PutResult:
        """Append a batch atomically (one log entry); see `PutStatus` for what each status promises."""
        try:
            self._check_master()
            ratio = self.options.disk_usage(self.store_dir)
            if ratio > self.options.disk_hard_ratio:
                raise StoreError(
                    PutStatus.DISK_FULL,
                    f"disk {ratio:.0%} used, over the hard limit {self.options.disk_hard_ratio:.0%}: writes refused",
                )
            now = self.stamp_time()
            creates, put, ids = self._preparer.prepare(batch, now)
            nonce = next(self._nonces)
            items = [c.encode_command(cmd) for cmd in creates]
            items.append(c.encode_put(nonce, now, put.topics, put.metas, put.blobs))
            limit = self._srv().config.max_entry_bytes
            if len(items[-1]) > limit:
                raise StoreError(
                    PutStatus.MESSAGE_ILLEGAL, f"the batch is {len(items[-1])} bytes; the limit is {limit}"
                )
            first, outcome = await self._propose(items, nonce)
        except StoreError as exc:
            return PutResult(exc.status, leader_address=exc.leader_address, reason=exc.reason)
        if not isinstance(outcome, PutOutcome):  # committed, but the entry did not apply as a PUT here
            return PutResult(PutStatus.FLUSH_OR_REPLICA_TIMEOUT, reason="committed without a put outcome")
        placed = outcome.placed
        rejected = sum(not ok for _, _, ok in placed)
        return PutResult(
            PutStatus.PUT_OK,
            msg_ids=tuple(ids),
            queue_id=placed[0][0],
            queue_offset=placed[0][1],
            queue_offsets=tuple(o for _, o, _ in placed),
            queue_ids=tuple(q for q, _, _ in placed),
            log_index=first + len(items) - 1,
            store_timestamp=outcome.store_ts,
            reason=f"{rejected} messages rejected at apply (offset -1)" if rejected else "",
        )

    # ---- reads (any replica) ----
    async def get_messages(
        self,
        group: str,
        topic: str,
        queue_id: int,
        offset: int,
        max_count: int = 32,
        max_bytes: int = 4 << 20,
        tag_filter: str | Iterable[str] | None = None,
    ) -> GetResult:
        """Messages of one queue from `offset` (RocketMQ's getMessage); `group` is for the caller's bookkeeping."""
        return await self._rd().get_messages(
            topic, queue_id, offset, max_count, max_bytes, parse_tag_filter(tag_filter)
        )

    def min_offset(self, topic: str, queue_id: int) -> int:
        return self._rd().min_offset(topic, queue_id)

    def max_offset(self, topic: str, queue_id: int) -> int:
        return self._rd().max_offset(topic, queue_id)

    def offset_for_timestamp(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        return self._rd().offset_for_timestamp(topic, queue_id, timestamp_ms)

    async def query_by_id(self, msg_id: str) -> StoredMessage | None:
        return await self._rd().query_by_id(msg_id)

    async def query_by_key(
        self, topic: str, key: str, max_count: int = 32, begin_ms: int = 0, end_ms: int = 1 << 62
    ) -> list[StoredMessage]:
        return await self._rd().query_by_key(topic, key, max_count, begin_ms, end_ms)

    # ---- background ----
    async def _timer_loop(self) -> None:
        """On the master: propose a TICK when a delayed message is due, so replicas release it together."""
        while True:
            await asyncio.sleep(self.options.timer_interval_s)
            if not self._master:
                continue
            due = self._next_timer()
            if due is not None and due <= self.options.clock():
                with contextlib.suppress(StoreError):
                    await self._command(lambda n, now: c.Tick(n, now))

    def _next_timer(self) -> int | None:
        with self.tables.env.begin() as txn:
            cursor = txn.cursor(db=self.tables.db["timers"])
            return int.from_bytes(cursor.key()[:8], "big") if cursor.first() else None

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.retention_interval_s)
            try:
                await self._ret().run()
            except Exception:
                log.exception("retention pass failed")

    async def run_retention(self) -> RetentionReport:
        """One retention pass now (see `retention.py`); returns its report."""
        return await self._ret().run()

    def _ret(self) -> Retention:
        if self.retention is None:
            raise RuntimeError("bind(server) first")
        return self.retention
