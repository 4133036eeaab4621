"""`bench.embedded_node`: the like-for-like latency load runs inside the leader and its appends are real."""

from __future__ import annotations

import pathlib

import pytest

from bench.e2e_groups import DledgerGroup

pytestmark = pytest.mark.process


def test_embedded_load_commits_its_appends_on_the_group(tmp_path: pathlib.Path) -> None:
    g = DledgerGroup(tmp_path, 3, "async", embedded=True)
    procs = []
    try:
        g.start()
        procs = list(g.procs.values())
        lead = g.wait_ready(30.0)
        before = g.statuses()[lead].commit_index
        r = g.embedded_load(100, 25)
        assert (r["entries"], r["errors"], len(r["lat_ms"])) == (25, 0, 25)
        assert all(x > 0 for x in r["lat_ms"])
        # each append waited for its commit: the group's commit index moved by at least the 25 entries
        assert g.statuses()[lead].commit_index >= before + 25
        follower = next(i for i in g.procs if i != lead)
        assert g.controls[follower].ask({"cmd": "load", "payload": 10, "max_ops": 1}) == {"error": "not leader"}
    finally:
        g.stop()
    assert len(procs) == 3 and all(p.poll() is not None for p in procs)  # every node process was reaped
