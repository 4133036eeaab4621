"""Cluster membership: `Membership` (voters and learners), single-server changes (`ConfChange`) and their codec.

A CONFIG entry's data is the FULL new membership, `Membership.encode()`, never a delta, so a node that
sees only the newest CONFIG entry (or a snapshot's config) knows the whole configuration.

Rules (thesis 4.1 and 4.2.1):
- a configuration takes effect on a node as soon as its CONFIG entry is in the node's log, committed or
  not; a truncation that removes the entry rolls the node back to the previous configuration;
- changes are single-server: each CONFIG entry differs from the previous configuration by one node
  (add a learner, promote a learner to voter, remove a member), so any majority of the old voters and
  any majority of the new voters intersect;
- a learner receives the log but never votes in a way that counts, never campaigns, and counts in no
  quorum (commit, elections, check-quorum, reads).

Invariants of a `Membership` (checked on construction and by `decode`): at least one voter; ids are
non-empty strings; no node is both voter and learner; addresses are strings (may be empty).
The encoding is deterministic: sorted, compact JSON with a version field, so equal memberships encode to
equal bytes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dledger.raft.errors import ConfChangeError

__all__ = ["ConfChange", "ConfChangeOp", "Membership", "apply_change", "decode_config"]

_VERSION = 1


def _check_side(name: str, side: Any) -> dict[str, str]:
    if not isinstance(side, Mapping):
        raise ValueError(f"membership: {name} must be a mapping of node id to address, got {type(side).__name__}")
    out: dict[str, str] = {}
    for node_id, address in side.items():
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"membership: {name} has an empty or non-string node id {node_id!r}")
        if not isinstance(address, str):
            raise ValueError(f"membership: {name}[{node_id!r}] address must be a string, got {address!r}")
        out[node_id] = address
    return dict(sorted(out.items()))


@dataclass(frozen=True, eq=True)
class Membership:
    """Who is in the group: voters and learners, node id -> address ("" when unknown)."""

    voters: Mapping[str, str]
    learners: Mapping[str, str] = field(default_factory=dict)

    __hash__ = None  # type: ignore[assignment]  # mappings inside: not hashable

    def __post_init__(self) -> None:
        voters = _check_side("voters", self.voters)
        learners = _check_side("learners", self.learners)
        if not voters:
            raise ValueError("membership: needs at least one voter")
        both = sorted(set(voters) & set(learners))
        if both:
            raise ValueError(f"membership: {both} are both voter and learner")
        object.__setattr__(self, "voters", voters)
        object.__setattr__(self, "learners", learners)

    @classmethod
    def initial(cls, peers: Iterable[str]) -> Membership:
        """The configuration given at start (`Config.peers`): voters with unknown addresses."""
        return cls({p: "" for p in peers})

    @property
    def members(self) -> frozenset[str]:
        return frozenset(self.voters) | frozenset(self.learners)

    def is_voter(self, node_id: str) -> bool:
        return node_id in self.voters

    def is_learner(self, node_id: str) -> bool:
        return node_id in self.learners

    def encode(self) -> bytes:
        doc = {"v": _VERSION, "voters": dict(self.voters), "learners": dict(self.learners)}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Parse `encode()`'s output; raises ValueError naming what is wrong."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"membership: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"membership: expected a JSON object, got {type(doc).__name__}")
        if doc.get("v") != _VERSION:
            raise ValueError(f"membership: unknown version {doc.get('v')!r} (expected {_VERSION})")
        extra = set(doc) - {"v", "voters", "learners"}
        if extra:
            raise ValueError(f"membership: unknown fields {sorted(extra)}")
        return cls(doc.get("voters", {}), doc.get("learners", {}))

    def __repr__(self) -> str:
        return f"Membership(voters={sorted(self.voters)}, learners={sorted(self.learners)})"


def decode_config(data: bytes, peers: Iterable[str]) -> Membership:
    """`HardState.config` / `SnapshotMeta.config` bytes: empty means the initial configuration `peers`."""
    return Membership.decode(data) if data else Membership.initial(peers)


class ConfChangeOp(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server change. `address` is recorded for ADD_LEARNER (and replaces it on PROMOTE if set)."""

    op: ConfChangeOp
    node_id: str
    address: str = ""


def apply_change(m: Membership, c: ConfChange) -> Membership:
    """The membership after `c`; raises ConfChangeError when `c` does not apply to `m`."""
    node = c.node_id
    if not isinstance(node, str) or not node:
        raise ConfChangeError("invalid node id")
    voters, learners = dict(m.voters), dict(m.learners)
    if c.op is ConfChangeOp.ADD_LEARNER:
        if node in voters or node in learners:
            raise ConfChangeError(f"{node} is already a member")
        learners[node] = c.address
    elif c.op is ConfChangeOp.PROMOTE:
        if node not in learners:
            raise ConfChangeError(f"{node} is not a learner")
        address = learners.pop(node)
        voters[node] = c.address or address
    elif c.op is ConfChangeOp.REMOVE:
        if node in voters:
            if len(voters) == 1:
                raise ConfChangeError(f"{node} is the last voter")
            del voters[node]
        elif node in learners:
            del learners[node]
        else:
            raise ConfChangeError(f"{node} is not a member")
    else:  # pragma: no cover - exhaustive enum
        raise ConfChangeError(f"unknown op {c.op!r}")
    return Membership(voters, learners)
