"""Client commands against a live local group: they say what happened, including when nothing did."""

from __future__ import annotations

import json
import pathlib

import pytest

from dledger.testing.launcher import is_our_node, load_state
from tests.support import run_dledger, wait_for

pytestmark = pytest.mark.process


def test_transfer_to_the_leader_and_dump_past_the_end_say_so(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "c"
    started = run_dledger("cluster", "--nodes", "3", "--store-dir", str(root), "--detach")
    assert started.returncode == 0, started.stderr
    _, _, pids = load_state(root)
    try:

        def leader() -> str | None:
            out = run_dledger("status", "--cluster", str(root), "--json")
            nodes = json.loads(out.stdout) if out.returncode == 0 else []
            leaders = [n["id"] for n in nodes if n["role"] == "leader"]
            return leaders[0] if len(leaders) == 1 else None

        first = wait_for(leader, 60, "a leader", poll=0.2)
        same = run_dledger("transfer-leader", "--cluster", str(root), "--to", first, "--timeout", "20")
        assert same.returncode == 0 and f"{first} already leads" in same.stdout, same.stdout + same.stderr
        assert "started" not in same.stdout

        other = next(i for i in ("n0", "n1", "n2") if i != first)
        moved = run_dledger("transfer-leader", "--cluster", str(root), "--to", other, "--timeout", "30")
        assert moved.returncode == 0 and f"leadership moved to {other}" in moved.stdout, moved.stdout + moved.stderr
        assert leader() == other

        appended = run_dledger("append", "--cluster", str(root), "a", "b", "--timeout", "20")
        assert appended.returncode == 0, appended.stderr
        last = int(appended.stdout.split()[-2])
        store = str(root / other)
        inside = run_dledger("log", "dump", "--store-dir", store, "--from", str(last), "--to", str(last))
        assert inside.returncode == 0 and inside.stdout.startswith(f"{last}\t"), inside.stdout + inside.stderr
        past = run_dledger("log", "dump", "--store-dir", store, "--from", str(last + 500), "--to", str(last + 600))
        assert past.returncode == 1 and past.stdout == ""
        assert (
            past.stderr.strip()
            == f"dledger log dump: no entries in {last + 500}..{last + 600}: past the end of the log"
        )
    finally:
        stopped = run_dledger("cluster", "stop", str(root))
    assert stopped.returncode == 0
    wait_for(lambda: not any(is_our_node(pid, root.resolve()) for pid in pids.values()), 15, "nodes gone")
