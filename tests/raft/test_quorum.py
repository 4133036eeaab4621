"""The quorum maths against naive references (like etcd's quorum/quick_test.go)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.raft.quorum import VoteResult, committed_index, majority, vote_result


def _naive_committed(indexes: list[int]) -> int:
    """The largest candidate value that a strict majority of the voters has reached."""
    return max((v for v in [0, *indexes] if sum(1 for i in indexes if i >= v) * 2 > len(indexes)), default=0)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=9))
def test_committed_index_matches_naive_reference(indexes: list[int]) -> None:
    assert committed_index(indexes) == _naive_committed(indexes)


@settings(max_examples=300, derandomize=True, database=None)
@given(st.integers(1, 9).flatmap(lambda n: st.lists(st.sampled_from([True, False, None]), min_size=n, max_size=n)))
def test_vote_result_matches_naive_reference(answers: list[bool | None]) -> None:
    voters = [f"n{i}" for i in range(len(answers))]
    votes = {v: a for v, a in zip(voters, answers, strict=True) if a is not None}
    granted = sum(1 for a in answers if a is True)
    possible = sum(1 for a in answers if a is not False)
    q = majority(len(voters))
    expected = VoteResult.WON if granted >= q else VoteResult.LOST if possible < q else VoteResult.PENDING
    assert vote_result(voters, votes) is expected


def test_majority_sizes() -> None:
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
