"""codec: every core message survives to_pb -> bytes -> from_pb unchanged; bad messages raise CodecError."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dledger._proto import dledger_pb2 as pb
from dledger.node.codec import (
    MAX_NUMBER,
    CodecError,
    Parts,
    WireCache,
    frame_batch,
    from_pb,
    pack_entries,
    to_pb,
    to_wire,
    to_wire_parts,
    unpack_entries,
    wire_size,
)
from dledger.raft import messages as m
from dledger.storage_api import Entry, EntryKind

u64 = st.integers(min_value=0, max_value=MAX_NUMBER)  # what the codec takes (see test_numbers_past_the_cap)
ids = st.text(alphabet="abcn0123456789_.", min_size=1, max_size=5)


@st.composite
def append_entries(draw: st.DrawFn) -> m.AppendEntries:
    """Entries are contiguous from prev_log_index + 1 (the packed form implies their indexes)."""
    prev = draw(st.integers(min_value=0, max_value=MAX_NUMBER - 10))
    entries = tuple(
        Entry(index=prev + 1 + k, term=term, data=data, kind=kind)
        for k, (term, data, kind) in enumerate(
            draw(st.lists(st.tuples(u64, st.binary(max_size=64), st.sampled_from(list(EntryKind))), max_size=5))
        )
    )
    return m.AppendEntries(
        term=draw(u64),
        from_id=draw(ids),
        to_id=draw(ids),
        group=draw(ids),
        prev_log_index=prev,
        prev_log_term=draw(u64),
        leader_commit=draw(u64),
        entries=entries,
        read_context=draw(st.binary(max_size=16)),
    )


def envelope() -> dict[str, Any]:
    return {"term": u64, "from_id": ids, "to_id": ids, "group": ids}


messages = st.one_of(
    st.builds(
        m.RequestVote,
        **envelope(),
        last_log_index=u64,
        last_log_term=u64,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    st.builds(m.RequestVoteResponse, **envelope(), vote_granted=st.booleans(), pre_vote=st.booleans()),
    append_entries(),
    st.builds(
        m.AppendEntriesResponse,
        **envelope(),
        success=st.booleans(),
        match_index=u64,
        reject_index=u64,
        conflict_index=u64,
        conflict_term=u64,
        last_log_index=u64,
        read_context=st.binary(max_size=16),
    ),
    st.builds(
        m.InstallSnapshot,
        **envelope(),
        last_included_index=u64,
        last_included_term=u64,
        config=st.binary(max_size=32),
    ),
    st.builds(m.InstallSnapshotResponse, **envelope(), last_index=u64, success=st.booleans()),
    st.builds(m.TimeoutNow, **envelope()),
)


@given(messages)
def test_round_trip_through_bytes(msg: m.Message) -> None:
    wire = to_pb(msg).SerializeToString()
    assert from_pb(pb.PeerMessage.FromString(wire)) == msg


@given(messages)
def test_wire_bytes_parse_to_the_protobuf_message(msg: m.Message) -> None:
    wire = to_wire(msg)
    assert pb.PeerMessage.FromString(wire) == to_pb(msg)
    assert from_pb(pb.PeerMessage.FromString(wire)) == msg


@given(messages, messages)
def test_framed_batch_parses_to_its_messages(a: m.Message, b: m.Message) -> None:
    batch = pb.PeerBatch.FromString(frame_batch([to_wire(a), to_wire(b)]))
    assert [from_pb(x) for x in batch.messages] == [a, b]
    assert frame_batch([]) == b""


@given(messages, messages)
def test_wire_parts_join_to_the_wire_bytes_and_frame_alike(a: m.Message, b: m.Message) -> None:
    pa, pb_ = to_wire_parts(a), to_wire_parts(b)
    for msg, parts in ((a, pa), (b, pb_)):
        whole = parts if isinstance(parts, bytes) else b"".join(parts.parts)
        assert whole == to_wire(msg) and wire_size(parts) == len(whole)
        assert isinstance(parts, Parts) == (isinstance(msg, m.AppendEntries) and bool(msg.entries))
    assert frame_batch([pa, pb_]) == frame_batch([to_wire(a), to_wire(b)])


def test_entries_are_serialized_once_per_ready_and_spliced_per_follower() -> None:
    entries = tuple(Entry(index=i, term=2, data=bytes([i]) * 300) for i in range(5, 9))
    to_b = m.AppendEntries(term=2, from_id="a", to_id="b", prev_log_index=4, prev_log_term=1, entries=entries)
    to_c = m.AppendEntries(term=2, from_id="a", to_id="c", prev_log_index=4, prev_log_term=1, entries=entries)
    cache: WireCache = {}
    wb, wc = to_wire(to_b, cache), to_wire(to_c, cache)
    assert len(cache) == 1
    ((parts, size),) = cache.values()
    blob = b"".join(parts)
    assert size == len(blob)
    assert wb.endswith(blob) and wc.endswith(blob)  # the same packed entries, spliced into both
    assert [from_pb(pb.PeerMessage.FromString(w)) for w in (wb, wc)] == [to_b, to_c]


def test_all_default_heartbeat_keeps_its_body() -> None:
    hb = m.AppendEntries(term=0, from_id="a", to_id="b")
    assert from_pb(pb.PeerMessage.FromString(to_pb(hb).SerializeToString())) == hb


def test_message_without_body_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="without a body"):
        from_pb(pb.PeerMessage(group="g", from_id="a", to_id="b"))


def _packed(heads: bytes, data: bytes) -> pb.PeerMessage:
    msg = pb.PeerMessage(group="g", from_id="a", to_id="b")
    msg.append_entries.entry_heads = heads
    msg.append_entries.entry_data = data
    return msg


@pytest.mark.parametrize(
    "body",
    [
        {"append_entries": pb.AppendEntries(term=2**64 - 1)},  # the term bomb: no term + 1 on the wire
        {"append_entries": pb.AppendEntries(term=5, leader_commit=MAX_NUMBER + 1)},
        {"request_vote": pb.RequestVote(term=3, last_log_index=2**63)},
        {"timeout_now": pb.TimeoutNow(term=MAX_NUMBER + 1)},
        {
            "append_entries": pb.AppendEntries(
                term=5, entry_heads=struct.pack("<QBI", MAX_NUMBER + 1, 0, 1), entry_data=b"x"
            )
        },
    ],
)
def test_numbers_past_the_cap_are_codec_errors(body: dict[str, Any]) -> None:
    msg = pb.PeerMessage(group="g", from_id="a", to_id="b", **body)
    with pytest.raises(CodecError, match=str(MAX_NUMBER)):
        from_pb(msg)


def test_the_largest_term_the_cap_allows_still_decodes() -> None:
    msg = pb.PeerMessage(group="g", from_id="a", to_id="b", timeout_now=pb.TimeoutNow(term=MAX_NUMBER))
    assert from_pb(msg).term == MAX_NUMBER


def test_unknown_entry_kind_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown kind 99"):
        from_pb(_packed(struct.pack("<QBI", 1, 99, 0), b""))


@pytest.mark.parametrize(
    ("heads", "data", "problem"),
    [
        (b"\x00" * 12, b"", "not a whole number"),
        (b"", b"x", "without entry heads"),
        (struct.pack("<QBI", 1, 0, 3), b"xy", "add up to 3 bytes, the data has 2"),
        (struct.pack("<QBI", 1, 0, 1) * 2, b"xyz", "add up to 2 bytes, the data has 3"),
        (struct.pack("<QBI", 1, 0, 2**32 - 1), b"x", "add up to 4294967295"),
    ],
)
def test_malformed_packed_entries_are_codec_errors(heads: bytes, data: bytes, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        from_pb(_packed(heads, data))


def test_packed_entries_take_their_indexes_from_prev_log_index() -> None:
    entries = (Entry(8, 2, b"ab"), Entry(9, 3, b"", EntryKind.NOOP), Entry(10, 3, b"c", EntryKind.CONFIG))
    heads, data = pack_entries(entries)
    assert (len(heads), data) == (39, b"abc")
    assert unpack_entries(8, heads, data) == entries
    assert [e.index for e in unpack_entries(100, heads, data)] == [100, 101, 102]
