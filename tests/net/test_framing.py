"""The length-prefixed frame decoder: chunking never changes the frames, bad lengths fail before allocation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dledger.net.framing import LENGTH, FrameDecoder, FrameError, encode_frame


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder(max_frame=300)
    got: list[bytes] = []
    for chunk in _split(stream, cuts):
        got.extend(dec.feed(chunk))
    assert got == payloads
    assert dec.buffered == 0


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10))
def test_random_bytes_only_ever_raise_frame_error(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder(max_frame=64, min_frame=4)
    try:
        for chunk in _split(data, cuts):
            for frame in dec.feed(chunk):
                assert 4 <= len(frame) <= 64
    except FrameError as err:
        assert "\n" not in str(err)
    assert dec.buffered <= 64 + LENGTH.size


def test_oversize_length_fails_on_its_four_bytes_and_stays_failed() -> None:
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameError, match="4294967295"):
        dec.feed(b"\xff\xff\xff\xff")  # nothing of the 4 GiB payload needs to arrive
    assert dec.buffered == 0
    with pytest.raises(FrameError):
        dec.feed(encode_frame(b"fine"))


def test_short_length_is_refused() -> None:
    dec = FrameDecoder(max_frame=100, min_frame=4)
    assert dec.feed(encode_frame(b"abcd")) == [b"abcd"]
    with pytest.raises(FrameError, match=r"outside the allowed 4\.\.100"):
        dec.feed(encode_frame(b"ab"))


def test_partial_frame_waits_for_the_rest() -> None:
    dec = FrameDecoder(max_frame=100)
    wire = encode_frame(b"hello") + encode_frame(b"")
    assert dec.feed(wire[:6]) == []
    assert dec.buffered == 2
    assert dec.feed(wire[6:]) == [b"hello", b""]


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=2**32)
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=3, min_frame=4)
