"""The message encoding and the command encoding: round trips (property tests) and rejection of bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.broker_adapter import commands as c
from dledger.broker_adapter.message import (
    Message,
    MessageFormatError,
    decode_message,
    encode_message,
    encode_stamped,
    scan_header,
    tag_hash,
)
from dledger.broker_adapter.pop import format_handle, parse_handle
from dledger.broker_adapter.reader import parse_tag_filter
from dledger.broker_adapter.retention import compactable_before

text = st.text(max_size=40)
i64 = st.integers(-(1 << 63), (1 << 63) - 1)
messages = st.builds(
    Message,
    topic=text,
    body=st.binary(max_size=300),
    queue_id=st.integers(-(1 << 31), (1 << 31) - 1),
    tags=text,
    keys=st.lists(text, max_size=4).map(tuple),
    properties=st.dictionaries(text, text, max_size=4),
    born_timestamp=i64,
    store_timestamp=i64,
    msg_id=text,
    message_group=text,
    delivery_timestamp=i64,
    transaction=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_message_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=100, deadline=None)
@given(messages, st.data())
def test_truncated_or_extended_message_is_rejected(msg: Message, data: st.DataObject) -> None:
    raw = encode_message(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MessageFormatError):
        decode_message(raw[:cut])
    with pytest.raises(MessageFormatError):
        decode_message(raw + b"\0")


def test_unknown_message_version_and_oversized_fields_are_rejected() -> None:
    raw = bytearray(encode_message(Message("t", b"b")))
    raw[0] = 2
    with pytest.raises(MessageFormatError, match="version"):
        decode_message(bytes(raw))
    with pytest.raises(MessageFormatError, match="longer than"):
        encode_message(Message("t" * 70_000, b"b"))
    with pytest.raises(MessageFormatError, match="range"):
        encode_message(Message("t", b"b", queue_id=1 << 40))


small = st.integers(-(1 << 31), (1 << 31) - 1)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def puts(draw: st.DrawFn) -> c.Put:
    topics = tuple(draw(st.lists(text, min_size=1, max_size=3)))
    blobs = tuple(draw(st.lists(st.binary(max_size=50), max_size=5)))
    metas = tuple(
        (len(b), draw(st.integers(0, len(topics) - 1)), draw(small), draw(u32), draw(u32), draw(i64),
         draw(st.integers(0, 1)), draw(u16), draw(u16), draw(u16))
        for b in blobs
    )  # fmt: skip
    return c.Put(draw(i64), draw(i64), topics, metas, blobs)


commands = st.one_of(
    puts(),
    st.builds(c.CreateTopic, i64, i64, text, small, small),
    st.builds(c.CommitOffset, i64, i64, text, text, small, i64),
    st.builds(c.PopReceive, i64, i64, text, text, small, small, small, i64, small),
    st.builds(c.Ack, i64, i64, text, st.lists(text, max_size=4).map(tuple)),
    st.builds(c.ChangeInvisible, i64, i64, text, text, i64),
    st.builds(c.Tick, i64, i64),
    st.builds(c.EndTransaction, i64, i64, text, st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(commands, st.data())
def test_command_round_trip_and_truncation(cmd: c.Command, data: st.DataObject) -> None:
    raw = c.encode_command(cmd)
    assert c.is_command(raw)
    assert c.decode_command(raw) == cmd
    for cut in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=3)):
        with pytest.raises(c.CommandError):
            c.decode_command(raw[:cut])
    with pytest.raises(c.CommandError):
        c.decode_command(raw + b"\1")


@settings(max_examples=100, deadline=None)
@given(messages, st.integers(-(1 << 31), (1 << 31) - 1), text)
def test_the_leaders_message_table_matches_the_message_bytes(msg: Message, queue: int, msg_id: str) -> None:
    blob, id_off, id_len = encode_stamped(msg, queue, msg_id, 5, 6)
    assert blob[id_off : id_off + id_len].decode() == msg_id
    assert decode_message(blob) == msg.replace(queue_id=queue, msg_id=msg_id, born_timestamp=5, store_timestamp=6)
    head = scan_header(blob, 0)
    assert head == (queue, msg.delivery_timestamp, msg.transaction, msg.topic, msg.tags, msg_id,
                    msg.message_group, list(msg.keys))  # fmt: skip
    meta = (len(blob), 0, queue, tag_hash(msg.tags), 0, 0, 0, id_off, id_len, len(msg.keys))
    raw = c.encode_put(1, 2, [msg.topic], [meta], [blob])
    topics, metas, start = c.put_view(raw)
    assert topics == [msg.topic] and metas == [meta] and raw[start:] == blob
    with pytest.raises(c.CommandError, match="sizes"):
        c.put_view(raw + b"x")
    bad_topic = c.encode_put(1, 2, [msg.topic], [(len(blob), 1, *meta[2:])], [blob])
    with pytest.raises(c.CommandError, match="topic"):
        c.put_view(bad_topic)


def test_foreign_entries_are_not_commands() -> None:
    assert not c.is_command(b"hello")
    with pytest.raises(c.CommandError):
        c.decode_command(c.MAGIC + b"\x09\x01" + bytes(16))  # unknown version
    with pytest.raises(c.CommandError):
        c.decode_command(c.MAGIC + b"\x01\x63" + bytes(16))  # unknown tag


def test_receipt_handles_and_tag_filters() -> None:
    handle = format_handle("%DLQ%g", 3, 17, 99)
    assert parse_handle(handle) == ("%DLQ%g", 3, 17, 99)
    for bad in ("", "x", "t:1:2", "t:a:2:3", ":1:2:3", "t:-1:2:3"):
        assert parse_handle(bad) is None
    assert parse_tag_filter(None) is None
    assert parse_tag_filter("*") is None
    assert parse_tag_filter("") is None
    assert parse_tag_filter("A || B") == frozenset({"A", "B"})
    assert parse_tag_filter(["A"]) == frozenset({"A"})


class Seg:
    def __init__(self, first: int, last: int, last_write: float) -> None:
        self.first_index, self.last_index, self.last_write = first, last, last_write


def test_retention_rule_drops_only_old_fully_replicated_prefixes() -> None:
    segs = [Seg(1, 10, 100.0), Seg(11, 20, 200.0), Seg(21, 30, 300.0), Seg(31, 35, 400.0)]
    # expired before 250: the first two; the last segment never goes
    assert compactable_before(segs, 1000, 250.0, False) == 21
    # a replica has applied only up to 15: the second segment stays
    assert compactable_before(segs, 15, 250.0, False) == 11
    # nothing expired and the disk is fine
    assert compactable_before(segs, 1000, 50.0, False) == 0
    # over the disk ratio: the expired ones plus one young one per pass
    assert compactable_before(segs, 1000, 150.0, True) == 21
    assert compactable_before(segs, 1000, 50.0, True) == 11
    assert compactable_before(segs, 1000, 1e9, False) == 31
    assert compactable_before(segs[-1:], 1000, 1e9, True) == 0
