"""The admin state's records: topic permissions, consumer group settings, per-group counters, recall handles.

These are values of the LMDB tables `topicattr`, `groups` and `gstats` (see `tables.py`), written only by the
applier. Layouts (big-endian, never changed in place: a new field means a new, longer layout whose reader
still takes the old length):

| table | value |
| --- | --- |
| topicattr | `>B` permission bits (4 read, 2 write); no row: read and write |
| groups | `GROUP`: max attempts, backoff initial / max ms, multiplier (thousandths), FIFO, start, start ms |
| gstats | `STATS` record: first deliveries, redeliveries, acknowledgements, dead-lettered |

Invariants: `GroupConfig.unpack(cfg.pack()) == cfg`; `check()` returns the one-line reason a setting is out of
range (None when valid): the leader refuses such a request and the applier skips such a command, so no replica
ever holds an invalid setting; a recall handle names the topic, the message id and its delivery time, and
`parse_recall_handle` refuses anything else without raising.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "GROUP",
    "MAX_ATTEMPTS",
    "PERM_READ",
    "PERM_WRITE",
    "STATS",
    "GroupConfig",
    "GroupStats",
    "StartFrom",
    "format_recall_handle",
    "parse_perm",
    "parse_recall_handle",
    "perm_name",
]

PERM_READ = 4
PERM_WRITE = 2
MAX_ATTEMPTS = 1000
MAX_BACKOFF_MS = 24 * 3_600_000
GROUP = struct.Struct(">iqqiBBq")
STATS = struct.Struct(">QQQQ")
_PERMS = {"rw": PERM_READ | PERM_WRITE, "r": PERM_READ, "w": PERM_WRITE, "none": 0}


class StartFrom(enum.IntEnum):
    """Where a group new to a topic starts on each queue. Stored in the log: never renumber."""

    LAST = 0  # after the messages stored before its first receive (RocketMQ 5's proxy default)
    FIRST = 1  # at the first message still retained
    TIMESTAMP = 2  # at the first message stored at or after `start_ms`


def perm_name(perm: int) -> str:
    return {v: k for k, v in _PERMS.items()}.get(perm & 6, "rw")


def parse_perm(text: str) -> int:
    """`rw`, `r`, `w` or `none`; raises ValueError otherwise."""
    if text not in _PERMS:
        raise ValueError(f"permission {text!r} is not rw, r, w or none")
    return _PERMS[text]


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """A consumer group's settings (RocketMQ's subscription group config, the parts that apply here)."""

    name: str
    max_attempts: int = 16  # deliveries before the message goes to %DLQ%<group>
    backoff_initial_ms: int = 1_000  # the push consumer's wait before a redelivery: initial ...
    backoff_max_ms: int = 7_200_000  # ... up to this ...
    backoff_multiplier_milli: int = 2_000  # ... multiplied by this (thousandths) after each attempt
    fifo: bool = False  # deliver each message group in order, one message in flight at a time
    start: StartFrom = StartFrom.LAST
    start_ms: int = 0  # for `StartFrom.TIMESTAMP`

    def check(self) -> str | None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            return f"max attempts {self.max_attempts} is not in 1..{MAX_ATTEMPTS}"
        if not 0 <= self.backoff_initial_ms <= self.backoff_max_ms <= MAX_BACKOFF_MS:
            return f"the backoff must satisfy 0 <= initial <= max <= {MAX_BACKOFF_MS} ms"
        if not 1_000 <= self.backoff_multiplier_milli <= 100_000:
            return "the backoff multiplier is not in 1..100"
        if self.start_ms < 0 or self.start_ms >= 1 << 62:
            return f"start time {self.start_ms} is out of range"
        return None

    def pack(self) -> bytes:
        return GROUP.pack(
            self.max_attempts,
            self.backoff_initial_ms,
            self.backoff_max_ms,
            self.backoff_multiplier_milli,
            1 if self.fifo else 0,
            int(self.start),
            self.start_ms,
        )

    @classmethod
    def unpack(cls, name: str, raw: bytes) -> GroupConfig:
        attempts, initial, top, multiplier, fifo, start, start_ms = GROUP.unpack_from(raw)
        kind = StartFrom(start) if start in StartFrom._value2member_map_ else StartFrom.LAST
        return cls(name, attempts, initial, top, multiplier, fifo == 1, kind, start_ms)

    def backoff_ms(self, attempt: int) -> int:
        """The wait before delivery `attempt + 1` (attempt >= 1)."""
        wait = self.backoff_initial_ms * (self.backoff_multiplier_milli / 1000) ** max(attempt - 1, 0)
        return int(min(wait, self.backoff_max_ms))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.name
        return out


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Replicated counters of one (group, topic)."""

    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    dead_lettered: int = 0

    def pack(self) -> bytes:
        return STATS.pack(self.delivered, self.redelivered, self.acked, self.dead_lettered)

    @classmethod
    def unpack(cls, raw: bytes | None) -> GroupStats:
        return cls(*STATS.unpack_from(raw)) if raw else cls()

    def plus(self, delivered: int = 0, redelivered: int = 0, acked: int = 0, dead_lettered: int = 0) -> GroupStats:
        return GroupStats(
            self.delivered + delivered,
            self.redelivered + redelivered,
            self.acked + acked,
            self.dead_lettered + dead_lettered,
        )


def format_recall_handle(topic: str, msg_id: str, delivery_ms: int) -> str:
    """The recall handle of a delayed message (what the send receipt carries)."""
    raw = f"v1 {topic} {msg_id} {delivery_ms}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_recall_handle(handle: str) -> tuple[str, str, int] | None:
    """(topic, message id, delivery ms), or None for anything that is not a handle of ours."""
    if not handle or len(handle) > 2048:
        return None
    try:
        raw = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    parts = raw.split(" ")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1] or not parts[2]:
        return None
    try:
        delivery = int(parts[3])
    except ValueError:
        return None
    if not 0 < delivery < 1 << 62:
        return None
    return parts[1], parts[2], delivery
