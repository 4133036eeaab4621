"""codec: every core message survives to_pb -> bytes -> from_pb unchanged; bad messages raise CodecError."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dledger._proto import dledger_pb2 as pb
from dledger.raft import messages as m
from dledger.server.codec import CodecError, from_pb, to_pb
from dledger.storage_api import Entry, EntryKind

u64 = st.integers(min_value=0, max_value=2**64 - 1)
ids = st.text(alphabet="abcn0123456789_.", min_size=1, max_size=5)
entries = st.lists(
    st.builds(Entry, index=u64, term=u64, data=st.binary(max_size=64), kind=st.sampled_from(list(EntryKind))),
    max_size=5,
).map(tuple)


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
    st.builds(
        m.AppendEntries,
        **envelope(),
        prev_log_index=u64,
        prev_log_term=u64,
        leader_commit=u64,
        entries=entries,
        read_context=st.binary(max_size=16),
    ),
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


def test_all_default_heartbeat_keeps_its_body() -> None:
    hb = m.AppendEntries(term=0, from_id="a", to_id="b")
    assert from_pb(pb.PeerMessage.FromString(to_pb(hb).SerializeToString())) == hb


def test_message_without_body_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="without a body"):
        from_pb(pb.PeerMessage(group="g", from_id="a", to_id="b"))


def test_unknown_entry_kind_is_a_codec_error() -> None:
    msg = pb.PeerMessage(group="g", from_id="a", to_id="b")
    msg.append_entries.entries.add(index=1, term=1, kind=99)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="unknown kind 99"):
        from_pb(msg)
