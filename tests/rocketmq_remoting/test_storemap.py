"""The mapping between a remoting message and the store's model: tags, keys, ids, system properties,
compression, delay levels, physical offsets."""

from __future__ import annotations

import gzip
import zlib

import pytest

from dledger.broker_adapter.message import Message
from dledger.broker_adapter.results import StoredMessage
from dledger.rocketmq.broker.storemap import (
    RemotingMessageError,
    SendFields,
    delay_levels,
    from_remoting,
    host_of,
    physical_offset,
    split_physical_offset,
    to_message_ext,
)
from dledger.rocketmq.remoting.msgformat import COMPRESSED_FLAG, encode_properties

LEVELS = delay_levels()
HOST = (bytes([10, 1, 2, 3]), 10911)


def send(**kw: object) -> Message:
    fields = SendFields(**{"topic": "T", "body": b"x", **kw})  # type: ignore[arg-type]
    return from_remoting(fields, now_ms=1_000_000, levels=LEVELS, max_body=1024)


def test_tags_keys_and_the_unique_key_become_store_fields_and_system_properties_are_hidden() -> None:
    props = {"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "C0A8", "PGROUP": "pg", "WAIT": "true", "color": "red"}
    msg = send(properties=encode_properties(props), flag=7, born_host="10.9.8.7:5555", queue_id=2)
    assert (msg.tags, msg.keys, msg.msg_id, msg.queue_id) == ("TagA", ("k1", "k2"), "C0A8", 2)
    assert {k: v for k, v in msg.properties.items() if not k.startswith("__dl.")} == {"color": "red"}
    ext = to_message_ext(StoredMessage(msg, "T", 2, 5, 9, 1234, 40), HOST)
    assert ext.properties == {**props}
    assert (ext.flag, ext.queue_id, ext.queue_offset, ext.store_timestamp) == (7, 2, 5, 1234)
    assert ext.born_host == (bytes([10, 9, 8, 7]), 5555)
    assert split_physical_offset(ext.commit_log_offset) == (9, 40)


def test_a_compressed_body_is_stored_inflated() -> None:
    raw = b"hello " * 100
    assert send(body=zlib.compress(raw), sys_flag=COMPRESSED_FLAG).body == raw
    with pytest.raises(RemotingMessageError, match="inflate"):
        send(body=b"not zlib", sys_flag=COMPRESSED_FLAG)
    with pytest.raises(RemotingMessageError, match="maxMessageSize"):
        send(body=zlib.compress(b"\0" * 5000), sys_flag=COMPRESSED_FLAG)  # a small bomb for a 1 KiB limit


def test_delay_levels_set_the_delivery_time() -> None:
    assert LEVELS[:4] == (1000, 5000, 10_000, 30_000) and LEVELS[-1] == 7_200_000 and len(LEVELS) == 18
    assert send(properties={"DELAY": "3"}).delivery_timestamp == 1_000_000 + 10_000
    assert send(properties={"DELAY": "99"}).delivery_timestamp == 1_000_000 + 7_200_000
    assert send(properties={"DELAY": "0"}).delivery_timestamp == 0
    with pytest.raises(RemotingMessageError):
        send(properties={"DELAY": "soon"})
    with pytest.raises(ValueError, match="messageDelayLevel"):
        delay_levels("1s 5x")


def test_bad_messages_are_refused_with_message_illegal() -> None:
    for kw in ({"body": b""}, {"body": b"y" * 2000}, {"properties": {"__dl.flag": "1"}}):
        with pytest.raises(RemotingMessageError) as err:
            send(**kw)
        assert err.value.code == 13


def test_gzip_bodies_of_grpc_producers_are_served_inflated() -> None:
    msg = Message("T", gzip.compress(b"abc"), properties={"__dl.encoding": "gzip", "__dl.bornHost": "host-a"})
    ext = to_message_ext(StoredMessage(msg, "T", 0, 0, 1, 1), HOST)
    assert ext.body == b"abc" and ext.properties == {}
    assert ext.born_host == (b"\x7f\0\0\x01", 0)  # a hostname is no address


def test_physical_offsets_are_unique_and_ordered_by_log_position() -> None:
    offsets = [physical_offset(i, p) for i in (1, 2, 3) for p in (0, 48, 4000)]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_host_parsing_never_raises() -> None:
    assert host_of("1.2.3.4:80") == (bytes([1, 2, 3, 4]), 80)
    assert host_of("[::ffff:1.2.3.4]:81") == (bytes([1, 2, 3, 4]), 81)
    assert host_of("[::1]:82")[1] == 82 and len(host_of("[::1]:82")[0]) == 16
    for junk in ("", "x", "1.2.3.4:99999", ":::", "[zz]:1"):
        assert len(host_of(junk)[0]) in (4, 16)
