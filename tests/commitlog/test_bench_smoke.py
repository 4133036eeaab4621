"""The storage benchmark runs end to end (with a tiny profile) and reports every figure; no timing asserts."""

from __future__ import annotations

import json
import pathlib

import pytest

from dledger.cli.main import main


def test_bench_storage_quick_runs_and_writes_json(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = pytest.importorskip("bench.storage")
    tiny = storage.Profile(
        budget_s=0.004, rounds=2, cap_bytes=1 << 16, read_entries=2000, reopen_bytes=1 << 20, reopen_repeats=2
    )
    monkeypatch.setattr(storage, "QUICK", tiny)
    out = tmp_path / "bench.json"
    assert main(["bench", "storage", "--quick", "--json", str(out), "--dir", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    assert len(report["append"]) == 12
    assert {(r["mode"], r["size"], r["batch"]) for r in report["append"]} == {
        (m, s, b) for m in ("async", "sync") for s in (100, 1024, 16384) for b in (1, 64)
    }
    assert all(r["entries"] > 0 and r["ratio"] > 0 for r in report["append"])
    assert report["read_entries_per_s"] > 0 and report["reopen"]["bytes"] >= 1 << 20
    assert "goals:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]  # the scratch directory was removed
