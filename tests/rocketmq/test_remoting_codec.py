"""The remoting codec: golden frames derived by hand from RocketMQ's documented layout, round trips of both
header serializations, fastjson's dialect, and random bytes that must only ever raise RemotingCodecError."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.rocketmq.remoting import (
    CommandDecoder,
    LanguageCode,
    RemotingCodecError,
    RemotingCommand,
    RequestCode,
    ResponseCode,
    SerializeType,
    decode_command,
    encode_command,
    fastjson,
)

# GET_ROUTEINFO_BY_TOPIC (105) with the ROCKETMQ header: code, language JAVA, version 0, opaque 7, flag 0,
# no remark, extFields {"topic": "T"}; lengths worked out by hand from RocketMQSerializable's layout.
ROUTE_REQUEST_ROCKETMQ = bytes.fromhex(
    "00000025"  # frame length: 4 + 33 header bytes, no body
    "01000021"  # serialize type 1 (ROCKETMQ) << 24 | header length 33
    "0069"  # code 105
    "00"  # language JAVA
    "0000"  # version 0
    "00000007"  # opaque 7
    "00000000"  # flag: a two-way request
    "00000000"  # remark length 0
    "0000000c"  # extFields length 12 = 2 + 5 + 4 + 1
    "0005" + b"topic".hex() + "00000001" + b"T".hex()
)


def test_golden_rocketmq_header_request() -> None:
    cmd = RemotingCommand.request(
        RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, opaque=7, serialize_type=SerializeType.ROCKETMQ
    )
    assert encode_command(cmd) == ROUTE_REQUEST_ROCKETMQ
    back = decode_command(ROUTE_REQUEST_ROCKETMQ[4:])
    assert back == cmd
    assert back.code == 105 and back.ext("topic") == "T" and not back.is_response and not back.is_oneway


def test_golden_json_header_response() -> None:
    header = b'{"code":0,"flag":1,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":0}'
    body = b'{"a":1}'
    frame = struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body
    request = RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, opaque=7)
    response = request.response_to(ResponseCode.SUCCESS, body=body)
    assert encode_command(response) == frame
    back = decode_command(frame[4:])
    assert back == response and back.is_response and back.opaque == 7 and back.body == body


def test_json_header_as_other_clients_write_it() -> None:
    """A C++-client style header: language by name, remark null, numbers in extFields, unknown keys ignored."""
    header = (
        b'{"code":34,"language":"CPP","version":401,"opaque":3,"flag":2,"remark":null,'
        b'"extFields":{"producerGroup":"g","queueId":3,"batch":false},"serializeTypeCurrentRPC":"JSON"}'
    )
    cmd = decode_command(struct.pack(">I", len(header)) + header + b"xyz")
    assert cmd.code == RequestCode.HEART_BEAT and cmd.language == LanguageCode.CPP and cmd.version == 401
    assert cmd.is_oneway and cmd.remark is None and cmd.body == b"xyz"
    assert dict(cmd.ext_fields) == {"producerGroup": "g", "queueId": "3", "batch": "false"}


def test_language_number_and_unknown_name() -> None:
    for lang, want in ((b"9", LanguageCode.GO), (b'"KOTLIN"', LanguageCode.OTHER)):
        header = b'{"code":1,"language":' + lang + b"}"
        assert decode_command(struct.pack(">I", len(header)) + header).language == want


def test_flags_and_response_pairing() -> None:
    req = RemotingCommand.request(RequestCode.UNREGISTER_CLIENT, oneway=True, opaque=9)
    assert req.flag == 2 and req.is_oneway and not req.is_response
    resp = RemotingCommand.request(RequestCode.HEART_BEAT, opaque=11).response_to(ResponseCode.SYSTEM_BUSY, "busy")
    assert resp.flag == 1 and resp.opaque == 11 and resp.remark == "busy"


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"\x00\x00", "no header length"),
        (b"\x00\x00\x00\x10{}", "exceeds"),
        (b"\x05\x00\x00\x02{}", "serialization type 5"),
        (b"\x00\x00\x00\x02[]", "not an object"),
        (b'\x00\x00\x00\x0c{"code":"x"}', "not an integer"),
        (b"\x00\x00\x00\x01{", "does not parse"),
        (b"\x01\x00\x00\x03abc", "shorter than its fixed part"),
        (b"\x01\x00\x00\x15" + b"\x00" * 13 + b"\x7f\xff\xff\xff" + b"\x00" * 4, "remark length"),
    ],
)
def test_malformed_payloads_name_the_problem(payload: bytes, why: str) -> None:
    with pytest.raises(RemotingCodecError, match=why):
        decode_command(payload)


def test_oversize_frame_is_refused_before_it_is_buffered() -> None:
    dec = CommandDecoder(max_frame=64)
    with pytest.raises(RemotingCodecError, match="outside"):
        dec.feed(struct.pack(">I", 65))
    with pytest.raises(RemotingCodecError):  # a failed decoder stays failed
        dec.feed(encode_command(RemotingCommand.request(1)))


def test_rocketmq_header_refuses_codes_beyond_a_short() -> None:
    with pytest.raises(ValueError, match="16 bits"):
        encode_command(RemotingCommand(70000, serialize_type=SerializeType.ROCKETMQ))


def test_fastjson_numeric_keys() -> None:
    data = {"brokerName": "b", "brokerAddrs": {0: "10.0.0.1:10911", 1: "10.0.0.2:10911"}}
    assert fastjson.dumps(data) == b'{"brokerName":"b","brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"}}'
    assert fastjson.dumps(data, standard=True) == (
        b'{"brokerName":"b","brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"}}'
    )
    parsed = fastjson.loads(fastjson.dumps(data))
    assert parsed == {"brokerName": "b", "brokerAddrs": {"0": "10.0.0.1:10911", "1": "10.0.0.2:10911"}}
    # text inside strings that looks like a bare key is left alone
    assert fastjson.loads(b'{"k":"{0:1}","m":{12:"a,3:b"}}') == {"k": "{0:1}", "m": {"12": "a,3:b"}}
    with pytest.raises(ValueError):
        fastjson.loads(b"[" * 1000 + b"]" * 1000)


def test_fastjson_deep_nesting_is_refused_also_as_standard_json() -> None:
    # 64 levels parse; 65 are refused with ValueError, whether the keys are bare or quoted
    nested: list[object] = []
    for _ in range(63):
        nested = [nested]
    assert fastjson.loads(b"[" * 64 + b"]" * 64) == nested
    for deep in (b"[" * 65 + b"]" * 65, b'{"a":' * 65 + b"1" + b"}" * 65, b"{1:" * 65 + b"1" + b"}" * 65):
        with pytest.raises(ValueError, match="nested deeper"):
            fastjson.loads(deep)


def test_fastjson_refuses_what_json_refuses_with_value_error() -> None:
    for bad in (b"{", b'{"a":}', b"{a b:1}", b"\xff", b'{"a":1}x', b""):
        with pytest.raises(ValueError):
            fastjson.loads(bad)


def test_fastjson_dumps_refuses_keys_json_would_coerce() -> None:
    for key in (True, 1.5, None, (1,)):
        with pytest.raises(TypeError, match="keys must be str or int"):
            fastjson.dumps({"a": {key: "v"}})


# ---- property tests ----

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(_json_values)
@settings(max_examples=300, deadline=None)
def test_fastjson_agrees_with_json_on_standard_json(value: object) -> None:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert fastjson.dumps(value) == fastjson.dumps(value, standard=True) == text.encode("utf-8")
    assert fastjson.loads(text.encode("utf-8")) == json.loads(text)
    spaced = json.dumps(value, indent=1)  # whitespace where fastjson's bare-key rewrite looks for keys
    assert fastjson.loads(spaced) == value

_text = st.text(max_size=20)
_int32 = st.integers(-(2**31), 2**31 - 1)
_int16 = st.integers(-(2**15), 2**15 - 1)


@st.composite
def commands(draw: st.DrawFn) -> RemotingCommand:
    kind = draw(st.sampled_from(SerializeType))
    small = kind == SerializeType.ROCKETMQ
    remark = draw(st.none() | (st.text(min_size=1, max_size=30) if small else _text))
    return RemotingCommand(
        code=draw(_int16 if small else _int32),
        language=draw(st.sampled_from(LanguageCode)),
        version=draw(_int16 if small else _int32),
        opaque=draw(_int32),
        flag=draw(_int32),
        remark=remark,
        ext_fields=draw(st.dictionaries(_text, _text, max_size=6)),
        body=draw(st.binary(max_size=64)),
        serialize_type=kind,
    )


@given(commands())
@settings(max_examples=300, deadline=None)
def test_round_trip(cmd: RemotingCommand) -> None:
    frame = encode_command(cmd)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert decode_command(frame[4:]) == cmd


@given(st.lists(commands(), min_size=1, max_size=5), st.data())
@settings(max_examples=100, deadline=None)
def test_chunking_never_changes_the_commands(cmds: list[RemotingCommand], data: st.DataObject) -> None:
    stream = b"".join(encode_command(c) for c in cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    dec = CommandDecoder()
    got: list[RemotingCommand] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += dec.feed(stream[a:b])
    assert got == cmds


@given(st.binary(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    dec = CommandDecoder(max_frame=256)
    try:
        dec.feed(data)
    except RemotingCodecError as exc:
        assert "\n" not in str(exc)


@given(st.sampled_from(SerializeType), st.binary(max_size=120))
@settings(max_examples=1000, deadline=None)
def test_random_headers_raise_only_codec_errors(kind: SerializeType, header: bytes) -> None:
    payload = struct.pack(">I", int(kind) << 24 | len(header)) + header
    try:
        decode_command(payload)
    except RemotingCodecError:
        pass
