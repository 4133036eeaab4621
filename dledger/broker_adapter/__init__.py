"""A RocketMQ-style message store on the replicated log (see docs/architecture.md).

`MessageStore` is a `SnapshottingStateMachine` of a `DLedgerServer` and the broker's API: put / get / query,
topics, consumer offsets, Pop consumption (receive, ack, change-invisible, redelivery, dead letters, FIFO,
delay), transactional messages, role callbacks, retention and snapshots. Modules: `message` (model and
encoding), `commands` (log entries), `tables` (LMDB layout), `image` (snapshot images of the tables), `apply`
and `pop` (deterministic apply), `prepare` (the leader's half of a put), `reader` (read path), `store` and
`popapi` (the API), `retention`, `options`, `results`; admin state: `admin_model` (records), `admin_apply`
(apply), `admin_read` (reads), `admin` (the API), `admin_ops` / `admin_service` / `admin_client` (the admin RPC),
`broker_metrics` (Prometheus).
"""

from dledger.broker_adapter.message import Message, MessageFormatError, MessageType, decode_message, encode_message
from dledger.broker_adapter.options import BROKER_KEYS, StoreOptions
from dledger.broker_adapter.results import (
    AckResult,
    AckStatus,
    GetResult,
    GetStatus,
    PopResult,
    PopStatus,
    PullStatus,
    PutResult,
    PutStatus,
    ReceivedMessage,
    StoredMessage,
    StoreError,
    TopicConfig,
)
from dledger.broker_adapter.retention import RetentionReport
from dledger.broker_adapter.store import MessageStore

__all__ = [
    "BROKER_KEYS",
    "AckResult",
    "AckStatus",
    "GetResult",
    "GetStatus",
    "Message",
    "MessageFormatError",
    "MessageStore",
    "MessageType",
    "PopResult",
    "PopStatus",
    "PullStatus",
    "PutResult",
    "PutStatus",
    "ReceivedMessage",
    "RetentionReport",
    "StoreError",
    "StoreOptions",
    "StoredMessage",
    "TopicConfig",
    "decode_message",
    "encode_message",
]
