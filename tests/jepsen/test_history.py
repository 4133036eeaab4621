"""History files: written by several writers, merged by time, paired; torn and unmatched lines tolerated."""

from __future__ import annotations

import pathlib

from jepsen_like.history import INF, HistoryWriter, read_ops


def test_histories_of_several_clients_merge_and_pair(tmp_path: pathlib.Path) -> None:
    a, b = HistoryWriter(tmp_path / "a.jsonl"), HistoryWriter(tmp_path / "b.jsonl")
    a.write("a.0", "invoke", "append", "a-1")
    b.write("b.0", "invoke", "read")
    a.write("a.0", "ok", "append", "a-1", index=1, term=2)
    b.write("b.0", "ok", "read", read_index=1, entries={"1": [2, 0, "a-1"]})
    a.write("a.1", "invoke", "append", "a-2")
    a.write("a.1", "info", "append", "a-2", error="OutcomeUnknownError")
    b.write("b.0", "invoke", "append", "b-1")  # its client was killed before the completion
    a.close()
    b.close()
    with open(tmp_path / "b.jsonl", "a") as f:
        f.write('{"t": 1, "process": "b.0", "ty')  # a torn last line
    ops = read_ops(sorted(tmp_path.glob("*.jsonl")))
    assert [(o.process, o.f, o.type) for o in ops] == [
        ("a.0", "append", "ok"), ("b.0", "read", "ok"), ("a.1", "append", "info"), ("b.0", "append", "info"),
    ]  # fmt: skip
    assert ops[0].index == 1 and ops[0].result["term"] == 2 and ops[0].end < INF
    assert ops[0].start < ops[1].start < ops[0].end < ops[1].end
    assert ops[2].end == INF and ops[2].done is not None and ops[3].done is None
