"""The Telemetry stream: settings handshake, and orphaned-transaction checks sent to producers.

Each client opens one bidirectional stream per endpoint and writes its `Settings`; the endpoint answers
with the settings the client must use (status OK): a producer gets an exponential backoff retry policy and
`publishing` limits; a consumer of a configured group gets the group's retry policy (max attempts, exponential
backoff) and FIFO flag; any other consumer a customized backoff (`maxReconsumeTimes` attempts) and `fifo`
true when every subscribed topic that exists is a FIFO topic; both get batch size and long polling
timeout; metrics are off. The stream stays open until the client closes it.

Orphan checks: every `transactionCheckInterval` this replica looks at the prepared (half) messages it has
applied; one older than `transactionTimeOut` is sent, as a `RecoverOrphanedTransactionCommand`, to a
producer connected here that publishes its topic (else any producer connected here); the producer answers
with EndTransaction, which reaches the leader like any write. A message is checked at most once per interval
per replica; a duplicate resolution is harmless (the second EndTransaction finds nothing prepared).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2
from rocketmq.grpc_protocol import definition_pb2 as d  # type: ignore[import-untyped]
from rocketmq.grpc_protocol import service_pb2 as s

from dledger.broker_adapter.message import MessageType
from dledger.rocketmq.v5.context import ServiceContext
from dledger.rocketmq.v5.convert import store_name, to_proto
from dledger.rocketmq.v5.support import client_metadata

__all__ = ["CONSUMER_BACKOFF_S", "Telemetry"]

log = logging.getLogger(__name__)

CONSUMER_BACKOFF_S = (1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200)


@dataclass(eq=False)
class _Session:
    client_id: str
    queue: asyncio.Queue[Any | None] = field(default_factory=asyncio.Queue)
    settings: Any = None

    @property
    def producer_topics(self) -> set[str] | None:
        """The topics of a producer (possibly empty), or None for a consumer or an unknown client."""
        if self.settings is None or not self.settings.HasField("publishing"):
            return None
        return {store_name(t) for t in self.settings.publishing.topics}


def _duration(seconds: float) -> Any:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


class Telemetry:
    def __init__(self, endpoint: ServiceContext) -> None:
        self.endpoint = endpoint
        self.sessions: set[_Session] = set()
        self._checked: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def reply(self, settings: Any) -> Any:
        """The settings a client must use, answering the ones it sent."""
        store = self.endpoint.store
        out = d.Settings()
        out.CopyFrom(settings)
        out.metric.Clear()
        out.metric.on = False
        if settings.HasField("publishing"):
            out.backoff_policy.max_attempts = 3
            eb = out.backoff_policy.exponential_backoff
            eb.initial.CopyFrom(_duration(0.01))
            eb.max.CopyFrom(_duration(1.0))
            eb.multiplier = 2.0
            out.publishing.max_body_size = store.options.max_message_bytes
            out.publishing.validate_message_type = True
        elif settings.HasField("subscription"):
            sub = out.subscription
            group = store.group_config(store_name(sub.group))
            if group is not None:  # a configured group: its retry policy and FIFO flag
                out.backoff_policy.max_attempts = group.max_attempts
                eb = out.backoff_policy.exponential_backoff
                eb.initial.CopyFrom(_duration(group.backoff_initial_ms / 1000))
                eb.max.CopyFrom(_duration(group.backoff_max_ms / 1000))
                eb.multiplier = group.backoff_multiplier_milli / 1000
                sub.fifo = group.fifo
            else:
                out.backoff_policy.max_attempts = store.options.max_delivery_attempts
                out.backoff_policy.customized_backoff.next.extend(_duration(x) for x in CONSUMER_BACKOFF_S)
                types = [store.topic(store_name(e.topic)) for e in sub.subscriptions]
                known = [t for t in types if t is not None]
                sub.fifo = bool(known) and all(t.message_type == MessageType.FIFO for t in known)
            sub.receive_batch_size = 32
            if not sub.HasField("long_polling_timeout") or sub.long_polling_timeout.seconds <= 0:
                sub.long_polling_timeout.CopyFrom(_duration(20))
        return s.TelemetryCommand(status=d.Status(code=d.Code.OK, message="OK"), settings=out)

    async def serve(self, requests: AsyncIterator[Any], context: Any, denied: Any | None) -> AsyncIterator[Any]:
        if denied is not None:
            yield s.TelemetryCommand(status=denied)
            return
        md = client_metadata(context.invocation_metadata() or ())
        session = _Session(md.get("x-mq-client-id", ""))
        self.sessions.add(session)
        self._ensure_checker()

        async def read() -> None:
            try:
                async for cmd in requests:
                    if cmd.HasField("settings"):
                        session.settings = cmd.settings
                        session.queue.put_nowait(self.reply(cmd.settings))
            except Exception as exc:  # the client went away
                log.debug("telemetry stream of %s ended: %r", session.client_id, exc)
            finally:
                session.queue.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (item := await session.queue.get()) is not None:
                yield item
        finally:
            self.sessions.discard(session)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    # ---- orphaned transactions ----
    def _ensure_checker(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._check_loop())

    async def _check_loop(self) -> None:
        cfg = self.endpoint.config
        while True:
            await asyncio.sleep(min(cfg.tx_check_interval_ms, cfg.tx_timeout_ms) / 1000 / 2)
            try:
                await self.check_orphans()
            except Exception:
                log.exception("orphaned transaction check failed")

    def _half_ids(self) -> list[str]:
        """Message ids of the prepared transactional messages this replica has applied.

        (Reads the store's `half` table directly: see the report for the store API this wants.)"""
        tables = self.endpoint.store.tables
        with tables.env.begin() as txn:
            cursor = txn.cursor(db=tables.db["half"])
            return [key.decode() for key in cursor.iternext(keys=True, values=False)]

    async def check_orphans(self) -> int:
        """Send one check per orphaned prepared message to a producer connected here; returns how many."""
        producers = [x for x in self.sessions if x.producer_topics is not None]
        if not producers:
            return 0
        cfg = self.endpoint.config
        now_ms = self.endpoint.store.options.clock()
        mono = time.monotonic()
        sent = 0
        for msg_id in self._half_ids():
            last = self._checked.get(msg_id)
            if last is not None and mono - last < cfg.tx_check_interval_ms / 1000:
                continue
            stored = await self.endpoint.store.query_by_id(msg_id)
            if stored is None or now_ms - stored.store_timestamp < cfg.tx_timeout_ms:
                continue
            topic = stored.message.topic
            target = next((p for p in producers if topic in (p.producer_topics or ())), producers[0])
            command = s.TelemetryCommand(
                recover_orphaned_transaction_command=s.RecoverOrphanedTransactionCommand(
                    message=to_proto(stored, cfg.address), transaction_id=msg_id
                )
            )
            target.queue.put_nowait(command)
            self._checked[msg_id] = mono
            sent += 1
        if len(self._checked) > 100_000:
            self._checked.clear()
        return sent

    async def close(self) -> None:
        for session in list(self.sessions):
            session.queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
