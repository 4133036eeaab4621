"""The one module that converts between the core's message dataclasses and the generated protobuf code.

Invariants: `from_pb(to_pb(m)) == m` for every message (a property test checks it); `from_pb` raises
`CodecError` for a message it cannot represent (no body, an unknown entry kind), so the driver can drop
and count it; nothing else in dledger touches `dledger._proto` message bodies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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

__all__ = ["CodecError", "from_pb", "to_pb"]


class CodecError(ValueError):
    """A peer message that cannot become a core message."""


_KINDS = {int(k): k for k in EntryKind}

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
    "install_snapshot": (
        InstallSnapshot,
        ("last_included_index", "last_included_term", "offset", "data", "done", "crc32"),
    ),
    "install_snapshot_response": (InstallSnapshotResponse, ("next_offset", "success")),
    "timeout_now": (TimeoutNow, ()),
}
_NAME_OF: dict[type[Any], str] = {cls: name for name, (cls, _) in _BODIES.items()}


def to_pb(msg: Message) -> pb.PeerMessage:
    name = _NAME_OF[type(msg)]
    out = pb.PeerMessage(group=msg.group, from_id=msg.from_id, to_id=msg.to_id)
    body = getattr(out, name)
    body.SetInParent()  # a body whose fields are all defaults must still be present
    body.term = msg.term
    for field_name in _BODIES[name][1]:
        setattr(body, field_name, getattr(msg, field_name))
    if isinstance(msg, AppendEntries) and msg.entries:
        body.entries.extend(
            pb.Entry(index=e.index, term=e.term, kind=int(e.kind), data=e.data)  # type: ignore[arg-type]
            for e in msg.entries
        )
    return out


def from_pb(msg: pb.PeerMessage) -> Message:
    name = msg.WhichOneof("body")
    if name is None:
        raise CodecError("peer message without a body")
    cls, fields = _BODIES[name]
    body = getattr(msg, name)
    values: dict[str, Any] = {f: getattr(body, f) for f in fields}
    if cls is AppendEntries:
        values["entries"] = _entries(body.entries)
    return cls(term=body.term, from_id=msg.from_id, to_id=msg.to_id, group=msg.group, **values)  # type: ignore[no-any-return]


def _entries(entries: Iterable[pb.Entry]) -> tuple[Entry, ...]:
    kinds = _KINDS
    try:
        return tuple(Entry(e.index, e.term, e.data, kinds[e.kind]) for e in entries)
    except KeyError as exc:
        raise CodecError(f"entry of unknown kind {exc.args[0]}") from None
