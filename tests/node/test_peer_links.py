"""The peer links' shared rules: the bounded outbox keeps the newest for an unreachable peer and drops the
newest for a connected one; appends with entries go on the bulk lane."""

from __future__ import annotations

from collections import Counter, deque

from dledger._proto import dledger_pb2 as pb
from dledger.node.codec import Parts
from dledger.node.peer_links import admit, split_lanes


def _outbox(*items: bytes) -> deque[bytes | Parts]:
    return deque(items)


def test_unreachable_peer_keeps_the_newest() -> None:
    stats: Counter[str] = Counter()
    box = _outbox(b"1", b"2", b"3")
    admit(box, [b"4", b"5"], max_pending=4, connected=False, stats=stats)
    assert list(box) == [b"2", b"3", b"4", b"5"]
    assert stats == Counter(dropped_stale=1)


def test_connected_peer_drops_what_does_not_fit() -> None:
    stats: Counter[str] = Counter()
    box = _outbox(b"1", b"2", b"3")
    admit(box, [b"4", b"5"], max_pending=4, connected=True, stats=stats)
    assert list(box) == [b"1", b"2", b"3", b"4"]
    assert stats == Counter(dropped_full=1)


def test_more_than_the_whole_outbox_at_once_is_cut_to_its_size() -> None:
    stats: Counter[str] = Counter()
    box = _outbox(b"1")
    admit(box, [b"a", b"b", b"c", b"d"], max_pending=2, connected=False, stats=stats)
    assert list(box) == [b"a", b"b"]
    assert stats == Counter(dropped_stale=1, dropped_full=2)


def test_split_lanes_puts_entries_on_bulk_and_serializes_the_rest() -> None:
    vote = pb.PeerMessage(group="g", from_id="n0", to_id="n1")
    parts = Parts([b"head", b"entries"], 11)
    control, bulk = split_lanes([vote, b"raw", parts])
    assert control == [vote.SerializeToString(), b"raw"]
    assert bulk == [parts]
