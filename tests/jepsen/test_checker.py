"""The checker on hand-made histories: one test per anomaly, and valid histories that must pass."""

from __future__ import annotations

from typing import Any

import pytest

from jepsen_like.checker import Verdict, check
from jepsen_like.history import Event, Op, pair_ops


class H:
    """Builds a history: each call adds an event one time unit after the last."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.t = 0

    def _e(self, process: str, type_: str, f: str, value: Any = None, **extra: Any) -> H:
        self.t += 10
        self.events.append(Event(self.t, process, type_, f, value, extra))
        return self

    def invoke(self, p: str, f: str, value: Any = None) -> H:
        return self._e(p, "invoke", f, value)

    def ok_append(self, p: str, value: str, index: int, term: int = 1) -> H:
        return self._e(p, "ok", "append", value, index=index, term=term)

    def fail_append(self, p: str, value: str) -> H:
        return self._e(p, "fail", "append", value, error="NotLeaderError")

    def info_append(self, p: str, value: str) -> H:
        return self._e(p, "info", "append", value, error="OutcomeUnknownError")

    def append(self, p: str, value: str, index: int, term: int = 1) -> H:
        return self.invoke(p, "append", value).ok_append(p, value, index, term)

    def ok_read(self, p: str, read_index: int, entries: dict[int, str], term: int = 1) -> H:
        return self._e(p, "ok", "read", None, read_index=read_index,
                       entries={str(i): [term, 0, v] for i, v in entries.items()})  # fmt: skip

    def read(self, p: str, read_index: int, entries: dict[int, str], term: int = 1) -> H:
        return self.invoke(p, "read").ok_read(p, read_index, entries, term)

    def ops(self) -> list[Op]:
        return pair_ops(self.events)


def final(entries: dict[int, str], term: int = 1, healed: bool = True, **extra: Any) -> dict[str, Any]:
    rows = [[i, term, 0, v] for i, v in sorted(entries.items())]
    return {"healed": healed, "common_index": max(entries, default=0), "entries": rows, "replica_problems": [],
            **extra}  # fmt: skip


def kinds(v: Verdict) -> set[str]:
    return {a.kind for a in v.anomalies}


def test_a_valid_history_with_concurrency_unknowns_and_failures_passes() -> None:
    h = H()
    h.invoke("a", "append", "a-1").invoke("b", "append", "b-1")  # concurrent: any order
    h.ok_append("b", "b-1", 1).ok_append("a", "a-1", 2)
    h.invoke("c", "append", "c-1").info_append("c", "c-1")  # unknown, and it did commit
    h.invoke("d", "append", "d-1").fail_append("d", "d-1")  # definitely not written, and it is not there
    h.read("e", 3, {1: "b-1", 2: "a-1", 3: "c-1"})
    h.append("a2", "a-2", 4).read("e", 4, {4: "a-2"})
    v = check(h.ops(), final({1: "b-1", 2: "a-1", 3: "c-1", 4: "a-2"}))
    assert v.valid, v.anomalies
    assert v.stats["appends_ok"] == 3 and v.stats["info_appends_committed"] == 1


def test_an_unknown_append_may_take_effect_after_later_operations() -> None:
    h = H()
    h.invoke("c", "append", "c-1").info_append("c", "c-1")
    h.append("a", "a-1", 1)  # began after c-1 "completed", yet c-1 lands later: fine, c-1 never completed
    h.read("r", 2, {1: "a-1", 2: "c-1"})
    assert check(h.ops(), final({1: "a-1", 2: "c-1"})).valid


def test_noop_entries_are_not_values() -> None:
    h = H().append("a", "a-1", 2)
    f = final({2: "a-1"})
    f["entries"].insert(0, [1, 1, 1, ""])  # the leader's no-op at index 1
    assert check(h.ops(), f).valid


def test_lost_write() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 2)
    v = check(h.ops(), final({1: "a-1"}))
    assert kinds(v) == {"lost-write"}
    assert v.anomalies[0].ops[0]["value"] == "a-2"


def test_lost_write_overwritten_in_the_final_log() -> None:
    h = H().append("a", "a-1", 1).invoke("b", "append", "b-1").info_append("b", "b-1")
    v = check(h.ops(), final({1: "b-1"}))
    assert {"lost-write", "divergent"} <= kinds(v)


def test_stale_read() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 2)
    h.read("r", 1, {1: "a-1"})  # began after a-2 was acknowledged at index 2
    v = check(h.ops(), final({1: "a-1", 2: "a-2"}))
    assert kinds(v) == {"stale-read"}
    assert {o["value"] for o in v.anomalies[0].ops} == {"a-2", None}


def test_a_read_concurrent_with_an_append_need_not_see_it() -> None:
    h = H().append("a", "a-1", 1)
    h.invoke("r", "read").invoke("a", "append", "a-2").ok_append("a", "a-2", 2).ok_read("r", 1, {1: "a-1"})
    assert check(h.ops(), final({1: "a-1", 2: "a-2"})).valid


def test_nonmonotonic_reads() -> None:
    h = H().append("a", "a-1", 1).invoke("b", "append", "b-1").info_append("b", "b-1")
    h.read("r1", 2, {2: "b-1"}).read("r2", 1, {1: "a-1"})
    v = check(h.ops(), final({1: "a-1", 2: "b-1"}))
    assert kinds(v) == {"nonmonotonic-read"}


def test_divergent_prefix_between_reads() -> None:
    h = H()
    for p in ("a", "b"):
        h.invoke(p, "append", f"{p}-1").info_append(p, f"{p}-1")
    h.read("r1", 1, {1: "a-1"}).read("r2", 1, {1: "b-1"})
    v = check(h.ops())
    assert "divergent" in kinds(v)


def test_divergent_read_against_acknowledged_index() -> None:
    h = H().append("a", "a-1", 1).invoke("b", "append", "b-1").info_append("b", "b-1")
    h.read("r", 1, {1: "b-1"})
    assert "divergent" in kinds(check(h.ops()))


def test_divergent_terms_at_one_index() -> None:
    h = H().append("a", "a-1", 1)
    h.read("r1", 1, {1: "a-1"}, term=1).read("r2", 1, {1: "a-1"}, term=2)
    assert kinds(check(h.ops())) == {"divergent"}


def test_duplicate() -> None:
    h = H().invoke("a", "append", "a-1").info_append("a", "a-1")
    h.read("r", 2, {1: "a-1", 2: "a-1"})
    v = check(h.ops(), final({1: "a-1", 2: "a-1"}))
    assert kinds(v) == {"duplicate"}


def test_aborted_read() -> None:
    h = H().invoke("a", "append", "a-1").fail_append("a", "a-1").read("r", 1, {1: "a-1"})
    v = check(h.ops(), final({1: "a-1"}))
    assert kinds(v) == {"aborted-read"}


def test_phantom_value() -> None:
    h = H().read("r", 1, {1: "nobody-1"})
    assert kinds(check(h.ops())) == {"phantom"}


def test_realtime_order_violation() -> None:
    h = H().append("a", "a-1", 2).append("b", "b-1", 1)  # b began after a finished but got a lower index
    v = check(h.ops(), final({1: "b-1", 2: "a-1"}))
    assert kinds(v) == {"realtime-order"}


def test_realtime_order_uses_the_final_index_of_an_unknown_append() -> None:
    h = H().append("a", "a-1", 2).invoke("b", "append", "b-1").info_append("b", "b-1")
    v = check(h.ops(), final({1: "b-1", 2: "a-1"}))  # b-1 was invoked after a-1 completed, yet sits below it
    assert kinds(v) == {"realtime-order"}


def test_replica_mismatch_and_unhealed_are_anomalies() -> None:
    h = H().append("a", "a-1", 1)
    assert kinds(check(h.ops(), final({1: "a-1"}, replica_problems=["n1 differs"]))) == {"replica-mismatch"}
    assert kinds(check(h.ops(), final({1: "a-1"}, healed=False))) == {"unhealed"}


@pytest.mark.parametrize("n", [1, 3])
def test_an_unmatched_invoke_counts_as_unknown(n: int) -> None:
    h = H()
    for k in range(n):
        h.invoke(f"p{k}", "append", f"p{k}-1")  # the client died before recording a completion
    ops = h.ops()
    assert [o.type for o in ops] == ["info"] * n
    assert check(ops, final({})).valid


def test_anomaly_lists_are_capped_but_counted() -> None:
    h = H()
    for k in range(60):
        h.append("a", f"a-{k}", k + 1)
    v = check(h.ops(), final({}))
    assert v.counts == {"lost-write": 60}
    assert 0 < len(v.anomalies) < 60


CONF = '{"learners":{"n3":"10.0.0.4:1"},"v":1,"voters":{"n0":"","n1":"","n2":""}}'


def _change(index: int, voters: list[str], learners: list[str]) -> dict[str, Any]:
    return {"op": "add-learner", "node": "n3", "outcome": "ok", "index": index, "voters": voters, "learners": learners}


def test_config_entries_are_not_values_and_acknowledged_changes_must_be_in_the_final_log() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 3)
    f = final({1: "a-1", 3: "a-2"})
    f["entries"].insert(1, [2, 1, 2, CONF])  # the CONFIG entry of a membership change at index 2
    v = check(h.ops(), f, [_change(2, ["n0", "n1", "n2"], ["n3"])])
    assert v.valid, v.anomalies
    assert v.stats["config_entries"] == 1 and v.stats["changes_ok"] == 1
    assert kinds(check(h.ops(), f, [_change(3, ["n0", "n1", "n2"], ["n3"])])) == {"lost-change"}  # not CONFIG
    assert kinds(check(h.ops(), f, [_change(2, ["n0", "n1"], ["n3"])])) == {"lost-change"}  # another config
    assert kinds(check(h.ops(), f, [_change(9, ["n0"], [])])) == {"lost-change"}  # past the commit index


def test_writes_below_the_first_index_of_every_replica_are_not_checked() -> None:
    h = H().append("a", "a-1", 1).append("a", "a-2", 2)
    f = final({2: "a-2"}, first_index=2)  # every compared replica's log starts after a snapshot at 1
    assert check(h.ops(), f).valid
