"""The one module that converts between the core's message dataclasses and the generated protobuf code.

Invariants: `from_pb(to_pb(m)) == m` for every message (a property test checks it); `to_wire(m)` is the
serialized `PeerMessage` of `to_pb(m)` (byte-for-byte what protobuf parses to the same message; checked by the
same test); `from_pb` raises `CodecError` for a message it cannot represent (no body, an unknown entry kind,
a term or index above `MAX_NUMBER`, which the core could not count past), so the driver can drop and count
it; nothing else in dledger touches `dledger._proto` message bodies.

AppendEntries carry their entries packed (`pack_entries`: a fixed-width head per entry and the data
concatenated; see the proto): encoding and decoding run in C-level maps, with no Python loop per entry. The
decoder trusts nothing: heads that are not a whole number of 13-byte records, sizes that do not add up to
the data, or an unknown kind raise CodecError. Indexes are implied (prev_log_index + 1 onwards), so only
well-formed messages (`messages.well_formed`) survive `from_pb(to_pb(m))` unchanged.

`to_wire_parts` exists for the hot path: the entries of one Ready are serialized once and the bytes are
spliced into the AppendEntries of every follower (protobuf's wire format is a concatenation of fields, in any
order). It returns the parts unjoined (`Parts`), and `frame_batch` joins each batch once: the entry bytes are
copied once per follower on their way to gRPC, not three times (to_wire's join, the batch's, gRPC's own).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import accumulate, repeat
from operator import attrgetter
from typing import Any, NamedTuple

from dledger._proto import dledger_pb2 as pb
from dledger.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from dledger.storage_api import Entry, EntryKind

__all__ = [
    "MAX_NUMBER",
    "CodecError",
    "EntriesCache",
    "Parts",
    "WireCache",
    "frame_batch",
    "from_pb",
    "pack_entries",
    "to_pb",
    "to_wire",
    "to_wire_parts",
    "unpack_entries",
    "wire_size",
]


class CodecError(ValueError):
    """A peer message that cannot become a core message."""


_KINDS = {int(k): k for k in EntryKind}
#: the largest term or index a peer message may carry: the wire's uint64 leaves no room for the core's
#: `term + 1` above it, so one forged message could otherwise leave a node unable to ever campaign again
MAX_NUMBER = (1 << 63) - 1

# body field name in PeerMessage -> (dataclass, its field names other than the envelope)
_BODIES: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "request_vote": (RequestVote, ("last_log_index", "last_log_term", "pre_vote", "transfer")),
    "request_vote_response": (RequestVoteResponse, ("vote_granted", "pre_vote")),
    "append_entries": (AppendEntries, ("prev_log_index", "prev_log_term", "leader_commit", "read_context")),
    "append_entries_response": (
        AppendEntriesResponse,
        (
            "success",
            "match_index",
            "reject_index",
            "conflict_index",
            "conflict_term",
            "last_log_index",
            "read_context",
        ),
    ),
    "install_snapshot": (InstallSnapshot, ("last_included_index", "last_included_term", "config")),
    "install_snapshot_response": (InstallSnapshotResponse, ("success", "last_index")),
    "timeout_now": (TimeoutNow, ()),
}
_NAME_OF: dict[type[Any], str] = {cls: name for name, (cls, _) in _BODIES.items()}


EntriesCache = dict[tuple[int, int, int], tuple[bytes, bytes]]
_HEAD = struct.Struct("<QBI")  # term, kind, data size: see AppendEntries.entry_heads in the proto


def to_pb(msg: Message, cache: EntriesCache | None = None) -> pb.PeerMessage:
    """`cache`, shared by the calls for one batch of messages (one Ready), lets AppendEntries that carry the
    same entries to several followers encode them once (a protobuf copy of the first body is much cheaper)."""
    name = _NAME_OF[type(msg)]
    out = pb.PeerMessage(group=msg.group, from_id=msg.from_id, to_id=msg.to_id)
    body = getattr(out, name)
    if isinstance(msg, AppendEntries) and msg.entries:
        entries = msg.entries
        # the same first and last Entry objects and count: the same slice of the leader's log (the log does
        # not change while one Ready's messages are encoded, and entries are immutable)
        key = (id(entries[0]), id(entries[-1]), len(entries))
        packed = cache.get(key) if cache is not None else None
        if packed is None:
            packed = pack_entries(entries)
            if cache is not None:
                cache[key] = packed
        body.entry_heads, body.entry_data = packed
    else:
        body.SetInParent()  # a body whose fields are all defaults must still be present
    body.term = msg.term
    for field_name in _BODIES[name][1]:
        setattr(body, field_name, getattr(msg, field_name))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_APPEND_ENTRIES_TAG = b"\x62"  # PeerMessage.append_entries: field 12, length-delimited
_BATCH_MESSAGE_TAG = b"\x0a"  # PeerBatch.messages: field 1, length-delimited
_ENTRY_HEADS_TAG = b"\x3a"  # AppendEntries.entry_heads: field 7, length-delimited
_ENTRY_DATA_TAG = b"\x42"  # AppendEntries.entry_data: field 8, length-delimited
# entries of one Ready -> (the encoded entry_heads and entry_data fields as parts to join, their total size)
WireCache = dict[tuple[int, int, int], tuple[list[bytes], int]]


class Parts(NamedTuple):
    """A serialized `PeerMessage` as parts (`b"".join(parts)` is the message) and its `size` in bytes."""

    parts: list[bytes]
    size: int


def wire_size(m: bytes | Parts) -> int:
    return len(m) if isinstance(m, bytes) else m.size


def to_wire(msg: Message, cache: WireCache | None = None) -> bytes:
    """The serialized `PeerMessage` of `msg`."""
    m = to_wire_parts(msg, cache)
    return m if isinstance(m, bytes) else b"".join(m.parts)


def to_wire_parts(msg: Message, cache: WireCache | None = None) -> bytes | Parts:
    """`to_wire`, but an AppendEntries with entries comes as `Parts`: its entries are serialized once per
    `cache` (one Ready) and spliced after the message's own fields for every follower, joined only by
    `frame_batch`."""
    if not (isinstance(msg, AppendEntries) and msg.entries):
        return bytes(to_pb(msg).SerializeToString())
    entries = msg.entries
    key = (id(entries[0]), id(entries[-1]), len(entries))  # see to_pb: the same slice of the log
    packed = cache.get(key) if cache is not None else None
    if packed is None:
        heads, datas = _heads(entries)
        size = sum(map(len, datas))
        parts = [_ENTRY_HEADS_TAG, _varint(len(heads)), heads, _ENTRY_DATA_TAG, _varint(size), *datas]
        packed = (parts, len(heads) + size + len(parts[1]) + len(parts[4]) + 2)
        if cache is not None:
            cache[key] = packed
    parts, size = packed
    head = pb.AppendEntries(
        term=msg.term,
        prev_log_index=msg.prev_log_index,
        prev_log_term=msg.prev_log_term,
        leader_commit=msg.leader_commit,
        read_context=msg.read_context,
    ).SerializeToString()
    envelope = pb.PeerMessage(group=msg.group, from_id=msg.from_id, to_id=msg.to_id).SerializeToString()
    body = _varint(len(head) + size)
    out = [envelope, _APPEND_ENTRIES_TAG, body, head, *parts]
    return Parts(out, len(envelope) + 1 + len(body) + len(head) + size)


def frame_batch(messages: Iterable[bytes | Parts]) -> bytes:
    """The serialized `PeerBatch` of these serialized `PeerMessage`s (joined once, whatever their form)."""
    parts: list[bytes] = []
    for m in messages:
        if isinstance(m, bytes):
            parts += (_BATCH_MESSAGE_TAG, _varint(len(m)), m)
        else:
            parts += (_BATCH_MESSAGE_TAG, _varint(m.size), *m.parts)
    return b"".join(parts)


def from_pb(msg: pb.PeerMessage) -> Message:
    name = msg.WhichOneof("body")
    if name is None:
        raise CodecError("peer message without a body")
    cls, fields = _BODIES[name]
    body = getattr(msg, name)
    values: dict[str, Any] = {f: getattr(body, f) for f in fields}
    if body.term > MAX_NUMBER or any(type(v) is int and v > MAX_NUMBER for v in values.values()):
        raise CodecError(f"{name} with a term or index above {MAX_NUMBER}")
    if cls is AppendEntries:
        values["entries"] = unpack_entries(body.prev_log_index + 1, body.entry_heads, body.entry_data)
    return cls(term=body.term, from_id=msg.from_id, to_id=msg.to_id, group=msg.group, **values)  # type: ignore[no-any-return]


_new_object = object.__new__
_set_index = Entry.__dict__["index"].__set__
_set_term = Entry.__dict__["term"].__set__
_set_data = Entry.__dict__["data"].__set__
_set_kind = Entry.__dict__["kind"].__set__
_index, _term, _data, _kind = (attrgetter(f) for f in ("index", "term", "data", "kind"))
_NORMAL = EntryKind.NORMAL


def _heads(entries: Sequence[Entry]) -> tuple[bytes, list[bytes]]:
    """The packed heads of `entries` (see the proto) and their data, in order."""
    datas = list(map(_data, entries))
    return b"".join(map(_HEAD.pack, map(_term, entries), map(_kind, entries), map(len, datas))), datas


def pack_entries(entries: Sequence[Entry]) -> tuple[bytes, bytes]:
    """(heads, data) of AppendEntries' packed form (see the proto), built without a Python loop."""
    heads, datas = _heads(entries)
    return heads, b"".join(datas)


def unpack_entries(first_index: int, heads: bytes, data: bytes) -> tuple[Entry, ...]:
    """The entries first_index.. of a packed AppendEntries; CodecError for anything malformed. Entries are
    built by setting their slots from C-level maps (checked equal to `Entry.__init__` by the codec tests)."""
    if len(heads) % _HEAD.size:
        raise CodecError(f"entry heads of {len(heads)} bytes are not a whole number of {_HEAD.size}-byte heads")
    if not heads:
        if data:
            raise CodecError(f"{len(data)} bytes of entry data without entry heads")
        return ()
    terms, kinds, sizes = zip(*_HEAD.iter_unpack(heads), strict=True)
    if max(terms) > MAX_NUMBER:
        raise CodecError(f"entry with a term above {MAX_NUMBER}")
    ends = list(accumulate(sizes))
    if ends[-1] != len(data):
        raise CodecError(f"entry sizes add up to {ends[-1]} bytes, the data has {len(data)}")
    n = len(ends)
    if kinds.count(0) == n:
        kind_values: Iterable[EntryKind] = repeat(_NORMAL, n)
    else:
        try:
            kind_values = [_KINDS[k] for k in kinds]
        except KeyError as exc:
            raise CodecError(f"entry of unknown kind {exc.args[0]}") from None
    datas = list(map(data.__getitem__, map(slice, [0, *ends[:-1]], ends)))
    out: list[Entry] = list(map(_new_object, repeat(Entry, n)))
    deque(map(_set_index, out, range(first_index, first_index + n)), maxlen=0)
    deque(map(_set_term, out, terms), maxlen=0)
    deque(map(_set_data, out, datas), maxlen=0)
    deque(map(_set_kind, out, kind_values), maxlen=0)
    return tuple(out)
