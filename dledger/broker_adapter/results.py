"""Statuses and results of the store API, named after RocketMQ's (`PutMessageStatus`, `GetMessageStatus`).

Invariants: a `PutResult` with `PUT_OK` means the batch is committed on a quorum and applied here, with its
queue offsets assigned; `NOT_LEADER`, `SERVICE_NOT_AVAILABLE`, `MESSAGE_ILLEGAL`, `DISK_FULL`,
`TOPIC_NOT_FOUND`, `NO_PERMISSION` and `NOT_FOUND` mean nothing was written; `FLUSH_OR_REPLICA_TIMEOUT` means
the outcome is unknown (the batch may still be committed: retry with the same message ids, and deduplicate by id).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from dledger.broker_adapter.message import Message, MessageType

__all__ = [
    "AckResult",
    "AckStatus",
    "GetResult",
    "GetStatus",
    "PopResult",
    "PopStatus",
    "PullStatus",
    "PutResult",
    "PutStatus",
    "ReceivedMessage",
    "StoreError",
    "StoredMessage",
    "TopicConfig",
    "check_name",
]


class PutStatus(enum.Enum):
    PUT_OK = "PUT_OK"
    NOT_LEADER = "NOT_LEADER"
    FLUSH_OR_REPLICA_TIMEOUT = "FLUSH_OR_REPLICA_TIMEOUT"  # outcome unknown
    SERVICE_NOT_AVAILABLE = "SERVICE_NOT_AVAILABLE"
    MESSAGE_ILLEGAL = "MESSAGE_ILLEGAL"
    TOPIC_NOT_FOUND = "TOPIC_NOT_FOUND"
    DISK_FULL = "DISK_FULL"
    NO_PERMISSION = "NO_PERMISSION"  # the topic's permission refuses it
    NOT_FOUND = "NOT_FOUND"  # what the request names does not exist (a group, a waiting delayed message)


class GetStatus(enum.Enum):
    FOUND = "FOUND"
    NO_MATCHED_MESSAGE = "NO_MATCHED_MESSAGE"
    MESSAGE_WAS_REMOVING = "MESSAGE_WAS_REMOVING"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    NO_MATCHED_LOGIC_QUEUE = "NO_MATCHED_LOGIC_QUEUE"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"


class PullStatus(enum.Enum):
    """What a pull consumer sees (RocketMQ's client `PullStatus`), derived from a `GetStatus`."""

    FOUND = "FOUND"
    NO_NEW_MSG = "NO_NEW_MSG"
    NO_MATCHED_MSG = "NO_MATCHED_MSG"
    OFFSET_ILLEGAL = "OFFSET_ILLEGAL"


_PULL = {
    GetStatus.FOUND: PullStatus.FOUND,
    GetStatus.NO_MATCHED_MESSAGE: PullStatus.NO_MATCHED_MSG,
    GetStatus.MESSAGE_WAS_REMOVING: PullStatus.NO_NEW_MSG,
    GetStatus.OFFSET_OVERFLOW_ONE: PullStatus.NO_NEW_MSG,
    GetStatus.NO_MESSAGE_IN_QUEUE: PullStatus.NO_NEW_MSG,
    GetStatus.OFFSET_OVERFLOW_BADLY: PullStatus.OFFSET_ILLEGAL,
    GetStatus.OFFSET_TOO_SMALL: PullStatus.OFFSET_ILLEGAL,
    GetStatus.NO_MATCHED_LOGIC_QUEUE: PullStatus.NO_NEW_MSG,
}


class PopStatus(enum.Enum):
    FOUND = "FOUND"
    NO_NEW_MSG = "NO_NEW_MSG"
    NOT_LEADER = "NOT_LEADER"
    TOPIC_NOT_FOUND = "TOPIC_NOT_FOUND"
    SERVICE_NOT_AVAILABLE = "SERVICE_NOT_AVAILABLE"
    ILLEGAL = "ILLEGAL"
    NO_PERMISSION = "NO_PERMISSION"  # the topic is not readable


class AckStatus(enum.Enum):
    OK = "OK"
    INVALID_HANDLE = "INVALID_HANDLE"  # malformed, already acknowledged, or superseded by a redelivery
    NOT_LEADER = "NOT_LEADER"
    SERVICE_NOT_AVAILABLE = "SERVICE_NOT_AVAILABLE"


@dataclass(frozen=True, slots=True)
class TopicConfig:
    name: str
    queue_count: int
    message_type: MessageType = MessageType.NORMAL
    perm: int = 6  # RocketMQ's permission bits: 4 read, 2 write (`admin_model.PERM_*`)


@dataclass(frozen=True, slots=True)
class PutResult:
    status: PutStatus
    msg_ids: tuple[str, ...] = ()
    queue_id: int = -1  # of the first message
    queue_offset: int = -1  # of the first message; -1 for delayed or transactional (prepared) messages
    queue_offsets: tuple[int, ...] = ()  # per message, like queue_ids
    queue_ids: tuple[int, ...] = ()
    log_index: int = 0
    store_timestamp: int = 0
    leader_address: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is PutStatus.PUT_OK

    @property
    def msg_id(self) -> str:
        return self.msg_ids[0] if self.msg_ids else ""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: its queue position, log position and the stamped store time."""

    message: Message
    topic: str  # the queue's topic (differs from message.topic in a dead-letter queue)
    queue_id: int
    queue_offset: int
    log_index: int
    store_timestamp: int


@dataclass(frozen=True, slots=True)
class GetResult:
    status: GetStatus
    next_offset: int
    min_offset: int
    max_offset: int
    messages: list[StoredMessage] = field(default_factory=list)

    @property
    def pull_status(self) -> PullStatus:
        return _PULL[self.status]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A popped message: acknowledge it with `receipt_handle` before `invisible_until` (epoch ms)."""

    stored: StoredMessage
    receipt_handle: str
    delivery_attempt: int
    invisible_until: int


@dataclass(frozen=True, slots=True)
class PopResult:
    status: PopStatus
    messages: list[ReceivedMessage] = field(default_factory=list)
    leader_address: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AckResult:
    status: AckStatus
    receipt_handle: str = ""  # the new handle after change_invisible_duration
    invisible_until: int = 0
    leader_address: str = ""
    reason: str = ""


NAME = re.compile(r"^[%|a-zA-Z0-9_-]{1,127}$")  # RocketMQ's topic / group name rule


class StoreError(Exception):
    """A write was not done (`status`), or its outcome is unknown (`FLUSH_OR_REPLICA_TIMEOUT`)."""

    def __init__(self, status: PutStatus, reason: str, leader_address: str = "") -> None:
        super().__init__(f"{status.value}: {reason}")
        self.status = status
        self.reason = reason
        self.leader_address = leader_address


def check_name(kind: str, name: str) -> None:
    """Raise `StoreError(MESSAGE_ILLEGAL)` unless `name` is a valid RocketMQ topic or group name."""
    if not NAME.match(name):
        raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"{kind} {name!r} must be 1-127 of [%|a-zA-Z0-9_-]")
