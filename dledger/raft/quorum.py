"""Majority-quorum maths, pure functions over a voter set (etcd's quorum/majority.go, our own code).

Invariants: a quorum is any strict majority of the voters; `committed_index` is the largest index that a
quorum has reached, so it never exceeds the index of a quorum's slowest member; a vote is WON only
when a quorum granted it, LOST only when a quorum can no longer grant it; `majorities_intersect` is exact
(tests compare it with enumerating every pair of majorities).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

__all__ = ["VoteResult", "committed_index", "majorities_intersect", "majority", "vote_result"]


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(n_voters: int) -> int:
    """Size of the smallest quorum of `n_voters` voters."""
    return n_voters // 2 + 1


def committed_index(indexes: Iterable[int]) -> int:
    """The largest value that at least a majority of `indexes` (one per voter) are >= to."""
    ordered = sorted(indexes, reverse=True)
    if not ordered:
        return 0
    return ordered[len(ordered) // 2]


def vote_result(voters: Iterable[str], votes: Mapping[str, bool]) -> VoteResult:
    """WON if a quorum granted, LOST if a quorum can no longer be reached, else PENDING."""
    n = granted = rejected = 0
    for v in voters:
        n += 1
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    q = majority(n)
    if granted >= q:
        return VoteResult.WON
    if n - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING


def majorities_intersect(a: Iterable[str], b: Iterable[str]) -> bool:
    """Does every majority of voter set `a` share a member with every majority of voter set `b`?

    Disjoint majorities exist exactly when both can be formed apart: a majority of `a` takes members of
    `a - b` first and needs the rest from `a & b`, likewise for `b`; they fit iff those needs fit in `a & b`.
    """
    sa, sb = set(a), set(b)
    both = len(sa & sb)
    need_a = max(0, majority(len(sa)) - (len(sa) - both))
    need_b = max(0, majority(len(sb)) - (len(sb) - both))
    return need_a + need_b > both
