"""The frame decoder on payloads above its `LARGE` mark (collected in pieces, joined once): the same frames
whatever the chunking, and never more held than one frame."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.net.framing import FrameDecoder, encode_frame

BIG = FrameDecoder.LARGE


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 100, BIG - 1, BIG, BIG + 1, 3 * BIG + 7]), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=5 * BIG), min_size=1, max_size=40),
)
def test_large_payloads_in_any_chunking_come_out_whole(sizes: list[int], steps: list[int]) -> None:
    payloads = [bytes([k % 251]) * n for k, n in enumerate(sizes)]
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder(max_frame=4 * BIG)
    got: list[bytes] = []
    pos = k = 0
    while pos < len(stream):
        step = steps[k % len(steps)]
        got.extend(dec.feed(stream[pos : pos + step]))
        assert dec.buffered <= 4 * BIG + 4
        pos += step
        k += 1
    assert got == payloads
    assert dec.buffered == 0
