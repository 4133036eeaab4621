"""The NameServer's request and response bodies: RocketMQ's `RegisterBrokerBody` (JSON, or its compressed
binary form), `DataVersion`, `TopicRouteData`, `ClusterInfo`, `TopicList` and `KVTable`.

The compressed `RegisterBrokerBody` (the REGISTER_BROKER header says `compressed=true`) is one zlib stream
of big-endian int32-length-prefixed pieces: the DataVersion JSON; the topic count, then each topic as
TopicConfig's text form `name readQueueNums writeQueueNums perm topicFilterType [attributes JSON]`; the
filter server list JSON; (newer brokers) the count of topic queue mappings and each one's JSON.

Invariants: every decoder raises only `BodyError` (a ValueError, one line) on bad input; a compressed body
never inflates beyond `MAX_INFLATED` bytes; numbers outside Java's int are refused.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from dledger.rocketmq.namesrv.routes import TopicQueues
from dledger.rocketmq.remoting import fastjson

__all__ = [
    "MAX_INFLATED",
    "BodyError",
    "decode_data_version",
    "decode_data_version_json",
    "decode_register_body",
    "encode_data_version",
    "encode_kv_table",
    "encode_register_body",
    "encode_topic_list",
]

MAX_INFLATED = 64 * 1024 * 1024
_I32 = struct.Struct(">i")
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1


class BodyError(ValueError):
    """A request body that is not what its request code needs."""


def _json(data: bytes, what: str) -> Any:
    try:
        return fastjson.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"the {what} is not JSON: {str(exc).splitlines()[0][:120]}") from None


def _number(value: Any, what: str, limit: int = _INT_MAX) -> int:
    if isinstance(value, dict) and "value" in value:  # an AtomicLong written as an object
        value = value["value"]
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -limit - 1 <= value <= limit:
        raise BodyError(f"{what} is not an integer in range: {str(value)[:40]!r}")
    return value


# ---- data version ----


def decode_data_version(obj: Any) -> tuple[int, int]:
    """(timestamp, counter) of a DataVersion object."""
    if obj is None:
        return (0, 0)
    if not isinstance(obj, dict):
        raise BodyError("the dataVersion is not an object")
    return (
        _number(obj.get("timestamp", 0), "dataVersion.timestamp", _LONG_MAX),
        _number(obj.get("counter", 0), "dataVersion.counter", _LONG_MAX),
    )


def decode_data_version_json(data: bytes) -> tuple[int, int]:
    """(timestamp, counter) of a DataVersion body; (0, 0) when empty."""
    return decode_data_version(_json(data, "dataVersion")) if data else (0, 0)


def encode_data_version(version: tuple[int, int]) -> dict[str, int]:
    return {"counter": version[1], "stateVersion": 0, "timestamp": version[0]}


# ---- RegisterBrokerBody ----


def decode_register_body(body: bytes, compressed: bool) -> tuple[list[TopicQueues], tuple[int, int]]:
    """The topics and the data version a broker registers."""
    if not body:
        return [], (0, 0)
    if compressed:
        return _decode_compressed(body)
    obj = _json(body, "RegisterBrokerBody")
    if not isinstance(obj, dict):
        raise BodyError("the RegisterBrokerBody is not an object")
    wrapper = obj.get("topicConfigSerializeWrapper") or {}
    if not isinstance(wrapper, dict):
        raise BodyError("topicConfigSerializeWrapper is not an object")
    table = wrapper.get("topicConfigTable") or {}
    if not isinstance(table, dict):
        raise BodyError("topicConfigTable is not an object")
    topics = [_topic_from_json(name, cfg) for name, cfg in table.items()]
    return topics, decode_data_version(wrapper.get("dataVersion"))


def _topic_from_json(name: str, cfg: Any) -> TopicQueues:
    if not isinstance(cfg, dict):
        raise BodyError(f"the topic config of {name[:60]!r} is not an object")
    topic = cfg.get("topicName") or name
    if not isinstance(topic, str):
        raise BodyError("a topicName is not a string")
    return TopicQueues(
        topic,
        _number(cfg.get("readQueueNums", 16), f"{topic[:60]}.readQueueNums"),
        _number(cfg.get("writeQueueNums", 16), f"{topic[:60]}.writeQueueNums"),
        _number(cfg.get("perm", 6), f"{topic[:60]}.perm"),
        _number(cfg.get("topicSysFlag", 0), f"{topic[:60]}.topicSysFlag"),
        cfg.get("order") is True,
    )


class _Pieces:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def has_more(self) -> bool:
        return self.pos < len(self.data)

    def int32(self, what: str) -> int:
        if self.pos + 4 > len(self.data):
            raise BodyError(f"the compressed RegisterBrokerBody ends inside {what}")
        (n,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(n)

    def piece(self, what: str) -> bytes:
        n = self.int32(f"the length of {what}")
        if n < 0 or n > len(self.data) - self.pos:
            raise BodyError(f"the compressed RegisterBrokerBody's {what} length {n} is out of bounds")
        self.pos += n
        return self.data[self.pos - n : self.pos]


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(body, MAX_INFLATED)
    except zlib.error as exc:
        raise BodyError(f"the compressed RegisterBrokerBody does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise BodyError(f"the compressed RegisterBrokerBody inflates beyond {MAX_INFLATED} bytes")
    return data


def _decode_compressed(body: bytes) -> tuple[list[TopicQueues], tuple[int, int]]:
    pieces = _Pieces(_inflate(body))
    version = decode_data_version(_json(pieces.piece("dataVersion"), "dataVersion"))
    count = pieces.int32("the topic count")
    if count < 0 or count > len(pieces.data) // 4:
        raise BodyError(f"the compressed RegisterBrokerBody's topic count {count} is out of bounds")
    topics = [_topic_from_text(pieces.piece("a topic config")) for _ in range(count)]
    return topics, version


def _topic_from_text(raw: bytes) -> TopicQueues:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("a topic config is not UTF-8") from None
    parts = text.split(" ", 5)
    if len(parts) < 5:
        raise BodyError(f"a topic config {text[:60]!r} has fewer than 5 fields")
    name = parts[0]
    return TopicQueues(
        name,
        _number(parts[1], f"{name[:60]}.readQueueNums"),
        _number(parts[2], f"{name[:60]}.writeQueueNums"),
        _number(parts[3], f"{name[:60]}.perm"),
    )


def encode_register_body(
    topics: Iterable[TopicQueues], data_version: tuple[int, int], *, compress: bool = False
) -> bytes:
    """What a broker sends with REGISTER_BROKER (the JSON form, or RocketMQ's compressed form)."""
    topics = list(topics)
    if compress:
        out = []
        version = fastjson.dumps(encode_data_version(data_version))
        out += [_I32.pack(len(version)), version, _I32.pack(len(topics))]
        for t in topics:
            text = f"{t.name} {t.read_queues} {t.write_queues} {t.perm} SINGLE_TAG".encode()
            out += [_I32.pack(len(text)), text]
        out += [_I32.pack(2), b"[]", _I32.pack(0)]
        return zlib.compress(b"".join(out), 9)
    table = {
        t.name: {
            "order": t.order,
            "perm": t.perm,
            "readQueueNums": t.read_queues,
            "topicFilterType": "SINGLE_TAG",
            "topicName": t.name,
            "topicSysFlag": t.sys_flag,
            "writeQueueNums": t.write_queues,
        }
        for t in topics
    }
    return fastjson.dumps(
        {
            "filterServerList": [],
            "topicConfigSerializeWrapper": {
                "dataVersion": encode_data_version(data_version),
                "topicConfigTable": table,
            },
        }
    )


# ---- responses ----


def encode_topic_list(topics: Iterable[str]) -> bytes:
    return fastjson.dumps({"topicList": list(topics)})


def encode_kv_table(table: Mapping[str, str]) -> bytes:
    return fastjson.dumps({"table": dict(table)})
