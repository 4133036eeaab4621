"""Retention: compact whole old log segments by age (`fileReservedTime`) or disk use (`diskMaxUsedSpaceRatio`).

Invariants: a segment is dropped only if (1) it is not the last one, (2) every entry in it is applied by this
store AND by every replica of the group (their `applied_index`, asked over the client service; if any replica
does not answer, nothing is dropped: without snapshots a lagging replica could never catch up), and
(3) it is older than the reserved time, or the disk is over `disk_max_used_ratio` (then the oldest eligible
segment goes even if young), and (4) unless the disk is over that ratio, no entry in it is pinned.

Pins: a delayed message not yet released (`timers`), a prepared transactional message not yet committed or
rolled back (`half`) and a popped message not yet acknowledged (`inflight`) keep their log entry, and so
every later one, whatever its age; the tables' `pins` index gives the oldest such entry, and a pin that holds
retention back is named in the report's reason. Pins do not hold against disk pressure (a warning is logged):
RocketMQ too deletes by disk use whatever is pending, and an abandoned Pop group (its expired in-flight
messages are redelivered or dead-lettered only by its own receives) must not fill the disk. Dead-letter
records are not pins: like any consume queue record they live as long as the original message's entry
(RocketMQ rewrites dead letters, so there they live one retention period longer).

The tables are synced to disk before the safe point is read, so nothing is compacted that an OS crash could
make the tables need again. Segments are dropped oldest first, never leaving a hole. The decision is local
to each replica (each drops its own files); it never changes replicated state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dledger.broker_adapter.options import StoreOptions
from dledger.broker_adapter.tables import Tables
from dledger.client.aio_client import AsyncDLedgerClient
from dledger.node.server import DLedgerServer

__all__ = ["Retention", "RetentionReport", "compactable_before"]

log = logging.getLogger(__name__)


class RetainedStore(Protocol):
    """What retention reads of the message store it compacts for."""

    @property
    def options(self) -> StoreOptions: ...

    @property
    def store_dir(self) -> Path: ...

    @property
    def tables(self) -> Tables: ...

    def last_applied(self) -> int: ...


class SegmentInfo(Protocol):
    """What retention reads of `DLedgerServer.segments()` items."""

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    @property
    def last_write(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetentionReport:
    first_index: int  # the log's first index after the pass
    dropped_before: int  # the index compaction was asked for (0: nothing dropped)
    safe_index: int  # every replica has applied up to here, and no entry up to here is pinned
    disk_ratio: float
    reason: str


def compactable_before(segments: Sequence[SegmentInfo], safe_index: int, expire_before: float, over_ratio: bool) -> int:
    """The index to compact before (0 for none): the longest prefix of droppable segments (a pure rule)."""
    before = 0
    young_taken = False
    for seg in segments[:-1]:
        if seg.last_index > safe_index:
            break
        if seg.last_write > expire_before:
            if not over_ratio or young_taken:
                break
            young_taken = True
        before = seg.last_index + 1
    return before


class Retention:
    def __init__(self, store: RetainedStore, server: DLedgerServer) -> None:
        self.store = store
        self.server = server
        self._client: AsyncDLedgerClient | None = None

    async def replicas_applied(self) -> tuple[int, str]:
        """min(applied index) over every replica, or (0, why) if one does not answer."""
        cfg = self.server.config
        if len(cfg.peers) == 1:
            return self.server.applied_index, ""
        missing: list[str] = []
        for _ in range(2):  # a second try on fresh channels: a restarted peer may sit in a reconnect backoff
            if self._client is None:
                self._client = AsyncDLedgerClient(cfg.peers, group=cfg.group, rpc_timeout=1.0)
            infos = await self._client.status()
            missing = [i.id for i in infos if not i.reachable]
            if not missing:
                return min(i.applied_index for i in infos), ""
            await self.close()
        return 0, f"replicas {missing} did not answer"

    async def run(self) -> RetentionReport:
        opts = self.store.options
        ratio = opts.disk_usage(self.store.store_dir)
        hours = opts.file_reserved_hours or self.server.config.file_reserved_hours
        replicas, why = await self.replicas_applied()
        self.store.tables.sync()  # (no await from here to the safe point: what it counts is on disk)
        safe = min(self.store.last_applied(), replicas)
        over_ratio = ratio > opts.disk_max_used_ratio
        pinned = self.store.tables.first_pinned()
        if pinned is not None and pinned <= safe:
            if over_ratio:
                log.warning(
                    "disk %.0f%% used: compacting past entry %d, pinned by a pending message", ratio * 100, pinned
                )
            else:
                safe = pinned - 1
                why = why or f"entry {pinned} is pinned by a pending, prepared or in-flight message"
        segments = self.server.segments()
        first = segments[0].first_index if segments else 1
        before = compactable_before(segments, safe, time.time() - hours * 3600, over_ratio)
        if before <= first:
            return RetentionReport(first, 0, safe, ratio, why or "nothing to drop")
        first = await self.server.compact(before)
        return RetentionReport(first, before, safe, ratio, "dropped")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
