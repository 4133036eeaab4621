"""The peer frame format: BATCH frames carry exactly a PeerBatch, entry bytes are not re-encoded, and
anything malformed (garbage, short, oversize, another version, an unknown type) fails as FrameError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dledger._proto import dledger_pb2 as pb
from dledger.net.framing import LENGTH, FrameError
from dledger.net.peer_frames import (
    VERSION,
    FrameType,
    PeerFrameDecoder,
    PeerFrameError,
    batch_parts,
    encode,
    hello_body,
    parse_hello,
    parse_refusal,
    refusal_body,
)
from dledger.node.codec import Parts, WireCache, to_wire, to_wire_parts
from dledger.raft.messages import AppendEntries, RequestVote
from dledger.storage_api import Entry

ENTRIES = tuple(Entry(index=i, term=2, data=bytes([i % 256]) * (i * 7 % 300)) for i in range(1, 51))


def _append(to: str, entries: tuple[Entry, ...] = ENTRIES) -> AppendEntries:
    return AppendEntries(term=2, from_id="a", to_id=to, group="g", prev_log_index=0, prev_log_term=0,
                         leader_commit=0, entries=entries)  # fmt: skip


def test_a_batch_frame_is_a_peer_batch_and_shares_the_entry_bytes() -> None:
    cache: WireCache = {}
    to_b, to_c = to_wire_parts(_append("b"), cache), to_wire_parts(_append("c"), cache)
    assert isinstance(to_b, Parts) and isinstance(to_c, Parts)
    vote = to_wire(RequestVote(term=3, from_id="a", to_id="b", group="g", last_log_index=1, last_log_term=1))
    parts, size = batch_parts([to_b, vote])
    wire = b"".join(parts)
    assert size == len(wire)
    (frames,) = [PeerFrameDecoder(1 << 20).feed(wire)]
    (frame,) = frames
    assert frame.kind == FrameType.BATCH
    batch = pb.PeerBatch.FromString(bytes(frame.body))
    assert [m.SerializeToString() for m in batch.messages] == [b"".join(to_b.parts), vote]
    # the entries' encoded bytes are the same objects in every follower's frame: no re-encoding, no join
    parts_c, _ = batch_parts([to_c])
    shared = {id(p) for p in parts if len(p) > 100}
    assert shared and shared <= {id(p) for p in parts_c}


def test_frames_of_every_type_round_trip_through_the_decoder() -> None:
    stream = b"".join(
        [
            encode(FrameType.HELLO, hello_body("grp", "n1", "n2")),
            encode(FrameType.WELCOME),
            encode(FrameType.AUTH, b"\x01\x02"),
            encode(FrameType.REFUSE, refusal_body("no\nway" * 100)),
            encode(FrameType.ACK),
        ]
    )
    dec = PeerFrameDecoder(1024)
    frames = [f for i in range(len(stream)) for f in dec.feed(stream[i : i + 1])]  # one byte at a time
    assert [f.kind for f in frames] == [FrameType.HELLO, FrameType.WELCOME, FrameType.AUTH, FrameType.REFUSE,
                                        FrameType.ACK]  # fmt: skip
    assert parse_hello(frames[0].body) == ("grp", "n1", "n2")
    reason = parse_refusal(frames[3].body)
    assert "\n" not in reason and len(reason) <= 200


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (LENGTH.pack(1) + b"\x01", "outside the allowed"),  # shorter than the version and type bytes
        (LENGTH.pack(2) + bytes([VERSION + 1, FrameType.ACK]), "version 2"),
        (LENGTH.pack(2) + bytes([VERSION, 99]), "unknown type 99"),
        (LENGTH.pack(10_000) + b"\x01\x06", "outside the allowed"),  # oversize: refused before the body
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "outside the allowed"),
    ],
)
def test_malformed_frames_fail_and_the_decoder_stays_failed(wire: bytes, error: str) -> None:
    dec = PeerFrameDecoder(1024)
    with pytest.raises(FrameError, match=error):
        dec.feed(wire)
    with pytest.raises(FrameError):
        dec.feed(encode(FrameType.ACK))


@pytest.mark.parametrize("body", [b"", b"\x03grp\x02n1", b"\x03grp\x02n1\x02n2\x00", b"\x01\xff\x01a\x01b",
                                  b"\x00\x01a\x01b"])  # fmt: skip
def test_a_malformed_hello_is_a_peer_frame_error(body: bytes) -> None:
    with pytest.raises(PeerFrameError):
        parse_hello(body)


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_random_bytes_only_ever_raise_frame_error(data: bytes, chunk: int) -> None:
    dec = PeerFrameDecoder(256)
    try:
        for i in range(0, len(data), chunk):
            for frame in dec.feed(data[i : i + chunk]):
                assert len(frame.body) <= 256
                if frame.kind == FrameType.HELLO:
                    try:
                        parse_hello(frame.body)
                    except PeerFrameError as exc:
                        assert "\n" not in str(exc)
                parse_refusal(frame.body)
    except FrameError as exc:
        assert "\n" not in str(exc)


@given(st.lists(st.tuples(st.sampled_from(list(FrameType)), st.binary(max_size=200)), max_size=20),
       st.integers(min_value=1, max_value=50))  # fmt: skip
def test_any_chunking_yields_the_same_frames(frames: list[tuple[FrameType, bytes]], chunk: int) -> None:
    stream = b"".join(encode(kind, body) for kind, body in frames)
    dec = PeerFrameDecoder(200)
    got = [(f.kind, bytes(f.body)) for i in range(0, len(stream), chunk) for f in dec.feed(stream[i : i + chunk])]
    assert got == frames
