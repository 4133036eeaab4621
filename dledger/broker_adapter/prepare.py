"""The leader's half of a put: validate a batch, choose queues and message ids, stamp times, encode.

Everything decided here is written into the PUT entry (queue ids, message ids, store time, the per-message
table), so replicas never repeat these decisions. Invariant: `prepare` raises `StoreError` (and nothing is
proposed) for an empty batch, an invalid or empty topic, a topic that is not writable, an empty or oversized
body, an unknown queue, or an unknown topic when auto-creation is off (an auto-created topic is MIXED: it takes
every message type); otherwise it returns the topics to auto-create first.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence

from dledger.broker_adapter import commands as c
from dledger.broker_adapter.admin_model import PERM_WRITE
from dledger.broker_adapter.message import Message, MessageFormatError, MessageType, StampEncoder, tag_hash
from dledger.broker_adapter.options import StoreOptions
from dledger.broker_adapter.results import PutStatus, StoreError, TopicConfig, check_name
from dledger.broker_adapter.tables import MAX_ID_BYTES, MAX_MSG_KEY_BYTES, MAX_TIME

__all__ = ["Preparer"]


class Preparer:
    """Per store: the id prefix (random per process start) and counters live here."""

    def __init__(self, options: StoreOptions, topic_of: Callable[[str], TopicConfig | None]) -> None:
        self.options = options
        self.topic_of = topic_of
        self.id_prefix = os.urandom(6).hex().upper()
        self.ids = itertools.count(1)
        self.round_robin = itertools.count()

    def prepare(self, batch: Sequence[Message], now: int) -> tuple[list[c.CreateTopic], c.Put, list[str]]:
        """Validate, choose queues and ids, stamp times; raises StoreError(MESSAGE_ILLEGAL / TOPIC_NOT_FOUND)."""
        if not batch:
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, "an empty batch")
        opts = self.options  # (the hot path of put: keep it lean)
        creates: dict[str, c.CreateTopic] = {}
        topics: dict[str, TopicConfig] = {}
        blobs, ids = [], []
        metas: list[c.PutMeta] = []
        topic_indexes: dict[str, int] = {}
        encoder = StampEncoder()
        prefix, counter, max_bytes = self.id_prefix, self.ids, opts.max_message_bytes
        for k, msg in enumerate(batch):
            cfg = topics.get(msg.topic)
            if cfg is None:
                cfg = topics[msg.topic] = self._topic_for_put(k, msg, now, creates)
            size = len(msg.body)
            if not 0 < size <= max_bytes:
                why = "the body is empty" if not size else f"the body is {size} bytes; maxMessageSize is {max_bytes}"
                raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"message {k}: {why}")
            queue = msg.queue_id
            if queue == -1:
                if msg.message_group:
                    queue = tag_hash(msg.message_group) % cfg.queue_count
                else:
                    queue = next(self.round_robin) % cfg.queue_count
            elif not 0 <= queue < cfg.queue_count:
                raise StoreError(
                    PutStatus.MESSAGE_ILLEGAL,
                    f"message {k}: queue {queue} does not exist (topic {msg.topic!r} has {cfg.queue_count})",
                )
            msg_id = msg.msg_id or f"{prefix}{next(counter):020X}"
            _check_limits(k, msg, msg_id)
            try:
                blob, id_off, id_len, th, gh = encoder.encode(msg, queue, msg_id, msg.born_timestamp or now, now)
            except MessageFormatError as exc:
                raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"message {k}: {exc}") from None
            topic_index = topic_indexes.setdefault(msg.topic, len(topic_indexes))
            metas.append(
                (len(blob), topic_index, queue, th, gh, msg.delivery_timestamp, msg.transaction, id_off, id_len,
                 len(msg.keys))
            )  # fmt: skip
            blobs.append(blob)
            ids.append(msg_id)
        put = c.Put(0, now, tuple(topic_indexes), tuple(metas), tuple(blobs))
        return list(creates.values()), put, ids

    def _topic_for_put(self, k: int, msg: Message, now: int, creates: dict[str, c.CreateTopic]) -> TopicConfig:
        """The topic's config, or one to auto-create (added to `creates`)."""
        if not msg.topic:
            raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"message {k}: the topic is empty")
        check_name("topic", msg.topic)
        cfg = self.topic_of(msg.topic)
        if cfg is not None:
            if not cfg.perm & PERM_WRITE:
                raise StoreError(PutStatus.NO_PERMISSION, f"topic {msg.topic!r} is not writable")
            return cfg
        if not self.options.auto_create_topic:
            raise StoreError(PutStatus.TOPIC_NOT_FOUND, f"topic {msg.topic!r} does not exist")
        kind = MessageType.MIXED  # an auto-created topic takes every message type
        count = self.options.default_queue_count
        creates[msg.topic] = c.CreateTopic(0, now, msg.topic, count, kind)
        return TopicConfig(msg.topic, count, kind)


def _check_limits(k: int, msg: Message, msg_id: str) -> None:
    """The limits that apply enforces too (it would reject the message: say so before proposing)."""
    if len(msg_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"message {k}: the message id is over {MAX_ID_BYTES} bytes")
    if any(len(key.encode("utf-8", "surrogatepass")) > MAX_MSG_KEY_BYTES for key in msg.keys):
        raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"message {k}: a key is over {MAX_MSG_KEY_BYTES} bytes")
    if msg.delivery_timestamp >= MAX_TIME:
        raise StoreError(PutStatus.MESSAGE_ILLEGAL, f"message {k}: the delivery time is out of range")
