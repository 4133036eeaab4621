"""codec fast paths: entries encoded once per Ready for several followers, entries decoded by slot setters."""

from __future__ import annotations

from dledger._proto import dledger_pb2 as pb
from dledger.node.codec import EntriesCache, from_pb, to_pb
from dledger.raft.messages import AppendEntries, AppendEntriesResponse
from dledger.storage_api import Entry, EntryKind


def test_shared_entries_are_encoded_once_yet_every_message_keeps_its_own_fields() -> None:
    entries = tuple(
        Entry(i, 4, f"e{i}".encode(), EntryKind.NOOP if i == 10 else EntryKind.NORMAL) for i in range(10, 20)
    )
    to_b = AppendEntries(term=4, from_id="n0", to_id="n1", group="g", prev_log_index=9, prev_log_term=3,
                         leader_commit=12, entries=entries, read_context=b"\x01")  # fmt: skip
    to_c = AppendEntries(term=4, from_id="n0", to_id="n2", group="g", prev_log_index=9, prev_log_term=3,
                         leader_commit=7, entries=entries)  # fmt: skip
    other = AppendEntries(term=4, from_id="n0", to_id="n2", group="g", prev_log_index=14, prev_log_term=4,
                          leader_commit=7, entries=entries[5:])  # fmt: skip
    reply = AppendEntriesResponse(term=4, from_id="n0", to_id="n1", group="g", success=True, match_index=3)
    cache: EntriesCache = {}
    encoded = [to_pb(m, cache) for m in (to_b, to_c, other, reply)]
    assert len(cache) == 2  # one encoding per distinct run of entries
    for message, wire in zip((to_b, to_c, other, reply), encoded, strict=True):
        assert from_pb(pb.PeerMessage.FromString(wire.SerializeToString())) == message


def test_decoded_entries_equal_entries_built_by_init() -> None:
    entries = (Entry(1, 1, b"", EntryKind.NOOP), Entry(2, 2, b"x" * 5000), Entry(3, 2, b"y", EntryKind.CONFIG))
    msg = AppendEntries(term=2, from_id="a", to_id="b", group="g", entries=entries)
    decoded = from_pb(to_pb(msg))
    assert isinstance(decoded, AppendEntries)
    assert decoded.entries == msg.entries
    assert [type(e.kind) for e in decoded.entries] == [EntryKind] * 3
    assert hash(decoded.entries[1]) == hash(Entry(2, 2, b"x" * 5000))
