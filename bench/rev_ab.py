"""A/B of two revisions of dledger on the same machine, in the same command: a baseline commit against this tree.

`python -m bench.rev_ab --baseline REV [--rounds 3] [--seconds 4] [--cases lat,lat-in,1k-x1,1k-x64,64k-x64]`
checks REV out into a temporary git worktree, then for each round and each case runs the case once on the
baseline and once on this tree (alternating, so that a machine's slow minute hurts both), each time with a
fresh 3-node group of that revision's `dledger node` processes and one load client of the same revision.
It prints every run, then per case the medians and the ratio (this tree / baseline; for latency, baseline /
this tree, so above 1 is better either way). Each revision's processes run with that revision's own bench
settings (its `bench.e2e_groups._env`). `lat-in` appends from inside the leader's process
(`bench.embedded_node`); a baseline older than that module cannot run it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
KiB = 1024

# name -> (payload, batch, inflight, max requests or 0 for a timed run)
CASES: dict[str, tuple[int, int, int, int]] = {
    "lat": (KiB, 1, 1, 2000),  # one synchronous client: p50
    "lat-in": (KiB, 1, 0, 2000),  # the same from inside the leader's process (inflight 0 marks it)
    "1k-x1": (KiB, 1, 256, 0),
    "1k-x64": (KiB, 64, 64, 0),
    "64k-x64": (64 * KiB, 64, 4, 0),
}

# Runs inside the revision's checkout (its own bench.e2e_groups and dledger): one group, one case, one JSON line.
_RUN_ONE = """
import json, pathlib, shutil, sys, tempfile
from bench.e2e_groups import DledgerGroup
payload, batch, inflight, max_ops, seconds = (float(x) if "." in x else int(x) for x in sys.argv[1:6])
root = pathlib.Path(tempfile.mkdtemp(prefix="dledger-rev-ab-"))
g = DledgerGroup(root, 3, "async", embedded=True) if inflight == 0 else DledgerGroup(root, 3, "async")
try:
    g.start()
    g.wait_ready()
    if inflight == 0:
        r = g.embedded_load(payload, max_ops)
    else:
        r = g.load(payload, batch, inflight, seconds if not max_ops else 120.0, max_ops or (1 << 40))
finally:
    g.stop()
    shutil.rmtree(root, ignore_errors=True)
lat = sorted(r["lat_ms"][20:])
print(json.dumps({"rate": r["entries"] / r["seconds"], "p50": lat[len(lat) // 2] if lat else None,
                  "p99": lat[int(len(lat) * 0.99)] if lat else None, "errors": r["errors"]}))
"""


def _run(tree: pathlib.Path, case: str, seconds: float) -> dict[str, Any]:
    payload, batch, inflight, max_ops = CASES[case]
    out = subprocess.run(
        [sys.executable, "-c", _RUN_ONE, str(payload), str(batch), str(inflight), str(max_ops), str(float(seconds))],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tree.name} {case} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rev_ab", description=__doc__)
    p.add_argument("--baseline", required=True, help="a git revision (commit, tag, branch)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    # lat-in is opt-in: a baseline older than bench.embedded_node cannot run it
    p.add_argument("--cases", default=",".join(c for c in CASES if c != "lat-in"))
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="dledger-rev-ab-tree-"))
    base = scratch / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline], check=True)
    trees = {"baseline": base, "this": ROOT}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for k in range(args.rounds):
            for case in cases:
                for name, tree in trees.items():
                    r = _run(tree, case, args.seconds)
                    results.setdefault((case, name), []).append(r)
                    shown = f"p50 {r['p50']:.3f} ms" if case.startswith("lat") else f"{r['rate']:,.0f} entries/s"
                    print(f"round {k + 1} {case:8s} {name:8s}: {shown} ({r['errors']} errors)", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"medians of {args.rounds} rounds, baseline {args.baseline} vs this tree:")
    for case in cases:
        latency = case.startswith("lat")
        key = "p50" if latency else "rate"
        b = statistics.median(r[key] for r in results[(case, "baseline")])
        t = statistics.median(r[key] for r in results[(case, "this")])
        ratio = b / t if latency else t / b
        unit = "ms p50" if latency else "entries/s"
        print(f"  {case:8s}: {b:,.3f} -> {t:,.3f} {unit}  ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
