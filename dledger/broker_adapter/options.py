"""`StoreOptions`: the broker-level settings of a `MessageStore`, with RocketMQ's broker.conf names.

These settings are read only on the leader side (validation, auto-create, stamping, retention) and are never
consulted while applying entries: two replicas with different options still derive identical state.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dledger.node.config import ConfigError, NodeConfig

__all__ = ["BROKER_KEYS", "ENTRY_HEADROOM", "StoreOptions", "disk_used_ratio", "wall_clock_ms", "with_entry_room"]

#: room in a log entry beyond maxMessageSize (which RocketMQ applies to the body alone): the properties (16 KiB
#: a message), names and the per-message table of a batch
ENTRY_HEADROOM = 1 << 20


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def disk_used_ratio(path: Path) -> float:
    """Used / total bytes of the file system holding `path` (RocketMQ's physic disk ratio)."""
    usage = shutil.disk_usage(path)
    return (usage.total - usage.free) / usage.total if usage.total else 0.0


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Times are milliseconds unless named otherwise; ratios are fractions of 1."""

    auto_create_topic: bool = True  # autoCreateTopicEnable
    default_queue_count: int = 8  # defaultTopicQueueNums
    max_message_bytes: int = 4 << 20  # maxMessageSize (one body)
    max_delivery_attempts: int = 16  # pop: then the message goes to %DLQ%<group>
    consume_from_last: bool = True  # consumeFromWhere: where a group new to a topic starts its RocketMQ receives
    disk_max_used_ratio: float = 0.75  # diskMaxUsedSpaceRatio: above it, old segments are compacted early
    disk_hard_ratio: float = 0.90  # diskSpaceWarningLevelRatio: above it, writes are refused (DISK_FULL)
    file_reserved_hours: float | None = None  # fileReservedTime; None: the node config's value
    retention_interval_s: float = 10.0  # how often the retention pass runs (0: never, call run_retention)
    timer_interval_s: float = 0.1  # how often the master releases due delayed messages
    put_timeout_s: float = 5.0  # then FLUSH_OR_REPLICA_TIMEOUT (outcome unknown)
    map_size: int = 1 << 36  # LMDB map size: address space, not disk (doubled when full)
    clock: Callable[[], int] = wall_clock_ms  # leader-side stamping only; tests inject a fake
    max_clock_ahead_ms: int = 3_600_000  # a master clock further ahead than its own elapsed time is a jump
    clock_jump_accept_s: float = 600.0  # ... unless it stays ahead this long (then it was a correction)
    disk_usage: Callable[[Path], float] = disk_used_ratio

    def __post_init__(self) -> None:
        if not 1 <= self.default_queue_count <= 1024:
            raise ConfigError(f"defaultTopicQueueNums: {self.default_queue_count} is not in 1..1024")
        if self.max_message_bytes < 1:
            raise ConfigError(f"maxMessageSize: {self.max_message_bytes} must be positive")
        if self.max_delivery_attempts < 1:
            raise ConfigError(f"max_delivery_attempts: {self.max_delivery_attempts} must be positive")
        for name in ("disk_max_used_ratio", "disk_hard_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name}: {value} is not in (0, 1]")
        if self.file_reserved_hours is not None and self.file_reserved_hours <= 0:
            raise ConfigError(f"fileReservedTime: {self.file_reserved_hours} must be positive")

    def replace(self, **changes: Any) -> StoreOptions:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_properties(cls, properties: Mapping[str, str], **overrides: Any) -> StoreOptions:
        """Read the broker keys in `BROKER_KEYS` (pass them as `other_keys` to `NodeConfig.from_file`)."""
        values: dict[str, Any] = {}
        for key, (name, convert) in BROKER_KEYS.items():
            if key in properties:
                try:
                    values[name] = convert(properties[key].strip())
                except ValueError:
                    raise ConfigError(f"{key}: {properties[key]!r} is not valid") from None
        values.update(overrides)
        try:
            return cls(**values)
        except TypeError as exc:  # an override with a wrong name
            raise ConfigError(str(exc)) from None


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _consume_from(text: str) -> bool:
    """consumeFromWhere: CONSUME_FROM_LAST_OFFSET (a new group skips what was stored before its first receive,
    as RocketMQ 5's proxy does) or CONSUME_FROM_FIRST_OFFSET (it receives everything still retained)."""
    if text not in ("CONSUME_FROM_LAST_OFFSET", "CONSUME_FROM_FIRST_OFFSET"):
        raise ValueError(text)
    return text == "CONSUME_FROM_LAST_OFFSET"


def _percent(text: str) -> float:
    return int(text) / 100  # RocketMQ writes these ratios as percentages


BROKER_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "autoCreateTopicEnable": ("auto_create_topic", _bool),
    "defaultTopicQueueNums": ("default_queue_count", int),
    "maxMessageSize": ("max_message_bytes", int),
    "diskMaxUsedSpaceRatio": ("disk_max_used_ratio", _percent),
    "diskSpaceWarningLevelRatio": ("disk_hard_ratio", float),
    "fileReservedTime": ("file_reserved_hours", float),
    "maxReconsumeTimes": ("max_delivery_attempts", int),
    "consumeFromWhere": ("consume_from_last", _consume_from),
}


def with_entry_room(node: NodeConfig, options: StoreOptions) -> NodeConfig:
    """`node` with a log entry limit that holds a body of `maxMessageSize` plus its headers and properties."""
    want = options.max_message_bytes + ENTRY_HEADROOM
    return node if node.max_entry_bytes >= want else dataclasses.replace(node, max_entry_bytes=want)
