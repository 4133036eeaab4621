"""RocketMQ's message encodings: the stored-message format checked against a decoder written here from the
format's description (field by field, with its own offsets), the batch layout, properties, message ids and
Java's String.hashCode."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.rocketmq.remoting.msgformat import (
    BORNHOST_V6_FLAG,
    COMPRESSED_FLAG,
    MAGIC_CODE,
    STOREHOST_V6_FLAG,
    BatchItem,
    MessageExt,
    MessageFormatError,
    decode_batch,
    decode_properties,
    encode_batch,
    encode_properties,
    encode_stored,
    java_string_hash,
    offset_msg_id,
    parse_offset_msg_id,
)


def reference_decode(buf: bytes) -> tuple[dict[str, object], int]:
    """Decode one stored message by the published layout: 4 total size, 4 magic, 4 body CRC, 4 queue id,
    4 flag, 8 queue offset, 8 physical offset, 4 sys flag, 8 born ts, born host (4 or 16 + 4 port by sys flag
    bit 4), 8 store ts, store host (by bit 5), 4 reconsume times, 8 prepared tx offset, 4 + body, 1 + topic,
    2 + properties."""
    out: dict[str, object] = {}
    p = 0

    def take(n: int) -> bytes:
        nonlocal p
        chunk = buf[p : p + n]
        assert len(chunk) == n, "truncated"
        p += n
        return chunk

    def i32() -> int:
        return int.from_bytes(take(4), "big", signed=True)

    def i64() -> int:
        return int.from_bytes(take(8), "big", signed=True)

    out["size"] = i32()
    out["magic"] = i32()
    out["crc"] = i32()
    out["queue_id"] = i32()
    out["flag"] = i32()
    out["queue_offset"] = i64()
    out["commit_log_offset"] = i64()
    sys_flag = i32()
    out["sys_flag"] = sys_flag
    out["born_timestamp"] = i64()
    born_ip = take(16 if sys_flag & 0x10 else 4)
    out["born_host"] = (born_ip, i32())
    out["store_timestamp"] = i64()
    store_ip = take(16 if sys_flag & 0x20 else 4)
    out["store_host"] = (store_ip, i32())
    out["reconsume_times"] = i32()
    out["prepared_transaction_offset"] = i64()
    out["body"] = take(i32())
    out["topic"] = take(take(1)[0]).decode()
    props_raw = take(int.from_bytes(take(2), "big")).decode()
    props = {}
    for item in props_raw.split("\x02"):
        if item:
            name, value = item.split("\x01")
            props[name] = value
    out["properties"] = props
    return out, p


names = st.text(st.characters(blacklist_characters="\x01\x02", blacklist_categories=("Cs",)), min_size=1, max_size=12)
hosts = st.tuples(st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16), st.integers(0, 65535))
i32s = st.integers(-(2**31), 2**31 - 1)
i64s = st.integers(-(2**63), 2**63 - 1)

messages = st.builds(
    MessageExt,
    topic=st.text(st.sampled_from("abcXYZ09_-%|"), min_size=1, max_size=127),
    body=st.binary(max_size=300),
    queue_id=i32s,
    flag=i32s,
    queue_offset=i64s,
    commit_log_offset=i64s,
    sys_flag=st.integers(0, 0xFFFF),
    born_timestamp=i64s,
    born_host=hosts,
    store_timestamp=i64s,
    store_host=hosts,
    reconsume_times=i32s,
    prepared_transaction_offset=i64s,
    properties=st.dictionaries(names, names, max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=4))
def test_stored_messages_decode_back_with_an_independent_decoder(msgs: list[MessageExt]) -> None:
    buf = b"".join(encode_stored(m) for m in msgs)  # a pull body: records back to back
    p = 0
    for m in msgs:
        got, used = reference_decode(buf[p:])
        assert got["size"] == used
        assert got["magic"] == MAGIC_CODE == struct.unpack(">i", bytes.fromhex("DAA320A7"))[0]
        assert got["crc"] == zlib.crc32(m.body) & 0x7FFFFFFF
        for name in (
            "queue_id", "flag", "queue_offset", "commit_log_offset", "born_timestamp", "born_host",
            "store_timestamp", "store_host", "reconsume_times", "prepared_transaction_offset", "body", "topic",
        ):  # fmt: skip
            assert got[name] == getattr(m, name), name
        assert got["properties"] == dict(m.properties)
        v6 = (BORNHOST_V6_FLAG if len(m.born_host[0]) == 16 else 0) | (
            STOREHOST_V6_FLAG if len(m.store_host[0]) == 16 else 0
        )
        assert got["sys_flag"] == (m.sys_flag & ~(BORNHOST_V6_FLAG | STOREHOST_V6_FLAG)) | v6
        p += used
    assert p == len(buf)


def test_a_stored_message_has_the_documented_fixed_offsets() -> None:
    raw = encode_stored(
        MessageExt("T", b"hi", queue_id=3, flag=0, queue_offset=7, commit_log_offset=99, store_timestamp=1234)
    )
    # RocketMQ's MessageDecoder positions: magic at 4, flag at 16, physical offset at 28, store timestamp at 56
    assert struct.unpack_from(">i", raw, 4)[0] == MAGIC_CODE
    assert struct.unpack_from(">q", raw, 28)[0] == 99
    assert struct.unpack_from(">q", raw, 56)[0] == 1234
    assert struct.unpack_from(">i", raw, 0)[0] == len(raw) == 84 + (4 + 2) + (1 + 1) + 2  # BODY_SIZE_POSITION is 84


def test_values_that_do_not_fit_are_refused_with_a_format_error() -> None:
    with pytest.raises(MessageFormatError):
        encode_stored(MessageExt("x" * 128, b""))
    with pytest.raises(MessageFormatError):
        encode_stored(MessageExt("T", b"", queue_id=2**31))
    with pytest.raises(MessageFormatError):
        encode_stored(MessageExt("T", b"", born_host=(b"\0" * 5, 1)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(BatchItem, body=st.binary(max_size=200), flag=i32s,
                          properties=st.dictionaries(names, names, max_size=5)), max_size=6))  # fmt: skip
def test_batches_round_trip(items: list[BatchItem]) -> None:
    back = decode_batch(encode_batch(items))
    assert [(b.body, b.flag, dict(b.properties)) for b in back] == [(i.body, i.flag, dict(i.properties)) for i in items]


def test_a_batch_record_has_the_client_layout() -> None:
    raw = encode_batch([BatchItem(b"abc", 5, {"TAGS": "t"})])
    size, magic, crc, flag, blen = struct.unpack_from(">iiiii", raw)
    assert (size, magic, crc, flag, blen) == (len(raw), 0, 0, 5, 3)
    assert raw[20:23] == b"abc"
    assert struct.unpack_from(">h", raw, 23)[0] == len("TAGS\x01t\x02")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_malformed_batches_raise_only_format_errors(data: bytes) -> None:
    try:
        decode_batch(data)
    except MessageFormatError as exc:
        assert "\n" not in str(exc)


def test_truncated_and_inconsistent_batches_are_refused() -> None:
    good = encode_batch([BatchItem(b"abc", 0, {"a": "b"}), BatchItem(b"d")])
    for cut in range(1, len(good)):
        if cut == len(encode_batch([BatchItem(b"abc", 0, {"a": "b"})])):
            continue  # a whole first record is a valid batch of one
        with pytest.raises(MessageFormatError):
            decode_batch(good[:cut])
    bad = bytearray(good)
    bad[16:20] = (2**31 - 1).to_bytes(4, "big")  # body length beyond the record
    with pytest.raises(MessageFormatError):
        decode_batch(bytes(bad))


def test_properties_use_rocketmqs_separators() -> None:
    props = {"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "ABC"}
    text = encode_properties(props)
    assert text == "TAGS\x01TagA\x02KEYS\x01k1 k2\x02UNIQ_KEY\x01ABC\x02"
    assert decode_properties(text) == props
    assert decode_properties("a\x01b\x02broken\x02c\x01d\x01e\x02") == {"a": "b"}


def test_offset_message_ids_encode_host_port_and_offset() -> None:
    mid = offset_msg_id((bytes([10, 0, 0, 7]), 10911), 0x1234)
    assert mid == "0A000007" + "00002A9F" + "0000000000001234"
    assert parse_offset_msg_id(mid) == ("10.0.0.7", 10911, 0x1234)
    assert parse_offset_msg_id(offset_msg_id((b"\0" * 15 + b"\1", 9), 5)) == ("::1", 9, 5)
    for bad in ("", "XYZ", "0A000007" * 3 + "zzzzzzzz", "00" * 17):
        with pytest.raises(MessageFormatError):
            parse_offset_msg_id(bad)


def test_tag_hash_is_javas_string_hash_code() -> None:
    # values of "...".hashCode() in Java
    assert java_string_hash("") == 0
    assert java_string_hash("TagA") == 2598919
    assert java_string_hash("hello") == 99162322
    text = "a much longer tag value"
    poly = sum(ord(ch) * 31 ** (len(text) - 1 - i) for i, ch in enumerate(text)) % 2**32
    assert java_string_hash(text) == (poly - 2**32 if poly >= 2**31 else poly)
    assert java_string_hash("\U0001f600") == (31 * 0xD83D + 0xDE00)
    assert -(2**31) <= java_string_hash("z" * 1000) < 2**31


def test_the_compressed_flag_is_bit_zero() -> None:
    assert COMPRESSED_FLAG == 1
