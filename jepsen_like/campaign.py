"""Campaigns: many runs over every nemesis, with one summary.

`--short` (CI): five runs of `run_seconds` each, sync flush, 3 nodes: kill, pause, partition, membership
changes (`member`) with kills and partitions overlapping (`MEMBER_SHORT`), and compaction with membership
changes and kills overlapping (`COMPACT_SHORT`); each of the last two was valid in 3 runs in a row (75 to
100 s each in all) before it was added.
Otherwise runs cycle through `LONG_PLAN` (every nemesis, 3 and 5 nodes, sync and async flush, lease reads
with clock skew, membership changes with kills and partitions) until `minutes` are used; a run is not
started if it could not end in time.
`membership_only` runs `MEMBER_PLAN` alone (membership and replace with kills, partitions, pauses and lost
writes; also part of `LONG_PLAN`). `compaction_only` runs `COMPACT_PLAN` alone (compact-follower and
compact-all with kills, partitions, membership changes, lost writes; also part of `LONG_PLAN`).
The broker workload is opt-in: `with_broker` adds `BROKER_SHORT` (one
kill-leader run) to `--short` and interleaves `BROKER_PLAN` with the long plan; `broker_only` runs `BROKER_PLAN` alone.
Invariants: each run's seed is drawn from the campaign's `random.Random(seed)`, so a campaign replays
from its seed and each run from its own printed seed; the exit code is 0 only if every run was valid.
The summary (`campaign.json`, `summary.md`) lists per run: its nemeses, seed, operations, faults injected,
anomalies and report directory.
"""

from __future__ import annotations

import json
import pathlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from jepsen_like.runner import RunOptions, replay_command, run

__all__ = [
    "BROKER_PLAN",
    "BROKER_SHORT",
    "COMPACT_PLAN",
    "COMPACT_SHORT",
    "LONG_PLAN",
    "MEMBER_PLAN",
    "MEMBER_SHORT",
    "SHORT_PLAN",
    "campaign",
    "plans",
]

DEFAULT_CAMPAIGNS = pathlib.Path("/tmp/jepsen_like/campaigns")
RUN_OVERHEAD = 40.0  # seconds a run takes beyond its fault phase (start, recovery, converge, check), roughly


@dataclass(frozen=True)
class Plan:
    nemeses: list[str]
    nodes: int = 3
    flush: str = "sync"
    lease_read: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    workload: str = "log"


MEMBER_SHORT = [Plan(["member", "kill", "partition"], extra={"overlap": True})]
COMPACT_SHORT = [Plan(["compact", "member", "kill"], extra={"overlap": True})]
SHORT_PLAN = [Plan(["kill"]), Plan(["pause"]), Plan(["partition"]), *MEMBER_SHORT, *COMPACT_SHORT]
LONG_PLAN = [
    Plan(["kill"]),
    Plan(["partition"], nodes=5),
    Plan(["pause"]),
    Plan(["lost-writes"], flush="async"),
    Plan(["restart", "kill-leader"], flush="async"),
    Plan(["clock-skew", "pause-isolate-leader"], lease_read=True),
    Plan(["transfer-storm", "partition-halves", "kill-random"]),
    Plan(["lost-writes"], flush="sync"),
    Plan(["damage-log", "kill-leader"], flush="sync"),
    Plan(["all"], nodes=5, extra={"overlap": True}),
    Plan(["kill", "lost-writes", "partition"], flush="async", extra={"overlap": True}),
    Plan(["partition-ring", "partition-bridge", "pause-leader"], nodes=5, flush="async"),
]
MEMBER_PLAN = [
    *MEMBER_SHORT,
    Plan(["membership", "partition", "pause-leader"], nodes=5, flush="async"),
    Plan(["replace", "kill-leader", "lost-writes"], flush="async"),
]
LONG_PLAN += MEMBER_PLAN
COMPACT_PLAN = [
    Plan(["compact", "kill", "partition"], extra={"overlap": True}),
    *COMPACT_SHORT,
    Plan(["compact-follower", "lost-writes", "partition"], flush="async", extra={"overlap": True}),
    Plan(["compact", "replace", "partition", "pause-leader"], nodes=5, extra={"overlap": True}),
]
LONG_PLAN += COMPACT_PLAN

BROKER_SHORT = [Plan(["kill-leader"], workload="broker")]
BROKER_PLAN = [
    Plan(["kill"], workload="broker"),
    Plan(["pause"], workload="broker"),
    Plan(["partition"], workload="broker"),
    Plan(["kill", "partition"], workload="broker", flush="async", extra={"overlap": True}),
]


def plans(short: bool, with_broker: bool, broker_only: bool, membership_only: bool = False,
          compaction_only: bool = False) -> list[Plan]:  # fmt: skip
    if compaction_only:
        return COMPACT_SHORT if short else COMPACT_PLAN
    if membership_only:
        return MEMBER_SHORT if short else MEMBER_PLAN
    if broker_only:
        return BROKER_SHORT if short else BROKER_PLAN
    if short:
        return SHORT_PLAN + (BROKER_SHORT if with_broker else [])
    if not with_broker:
        return LONG_PLAN
    out: list[Plan] = []
    for k, plan in enumerate(LONG_PLAN):
        out.append(plan)
        if k % 2 == 1:
            out.append(BROKER_PLAN[(k // 2) % len(BROKER_PLAN)])
    return out


def campaign(*, minutes: float, seed: int | None, short: bool, run_seconds: float, net: str,
             out: str | None, with_broker: bool = False, broker_only: bool = False,
             membership_only: bool = False, compaction_only: bool = False,
             peer_transport: str = "grpc") -> int:  # fmt: skip
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    root = pathlib.Path(out) if out else DEFAULT_CAMPAIGNS / f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    flags = ("--short " if short else f"--minutes {minutes:g} ") + f"--run-seconds {run_seconds:g}"
    flags += (" --with-broker" if with_broker else "") + (" --broker-only" if broker_only else "")
    flags += " --membership-only" if membership_only else ""
    flags += " --compaction-only" if compaction_only else ""
    flags += f" --peer-transport {peer_transport}" if peer_transport != "grpc" else ""
    print(f"[jepsen_like] campaign seed {seed}; replay with: python -m jepsen_like campaign --seed {seed} {flags}",
          flush=True)  # fmt: skip
    deadline = time.monotonic() + minutes * 60
    results: list[dict[str, Any]] = []
    todo = plans(short, with_broker, broker_only, membership_only, compaction_only)
    k = 0
    while True:
        if short and k >= len(todo):
            break
        if not short and time.monotonic() + run_seconds + RUN_OVERHEAD > deadline:
            break
        plan = todo[k % len(todo)]
        opts = RunOptions(seed=rng.randrange(2**31), nodes=plan.nodes, duration=run_seconds,
                          nemeses=list(plan.nemeses), flush=plan.flush, lease_read=plan.lease_read, net=net,
                          out=str(root / f"run{k:02d}-{plan.workload}-{'+'.join(plan.nemeses)}"),
                          workload=plan.workload, peer_transport=peer_transport, **plan.extra)  # fmt: skip
        started = time.monotonic()
        try:
            code = run(opts)
        except Exception as exc:  # a run that could not complete is a failed run, not the end of the campaign
            print(f"[jepsen_like] run {k} failed: {type(exc).__name__}: {exc}", flush=True)
            code = 1
        results.append(_summarise(k, opts, code, time.monotonic() - started))
        (root / "campaign.json").write_text(json.dumps({"seed": seed, "runs": results}, indent=1))
        k += 1
    _write_markdown(root, seed, results)
    valid = all(r["valid"] for r in results)
    totals = _totals(results)
    print(f"[jepsen_like] campaign {'VALID' if valid else 'INVALID'}: {json.dumps(totals)}", flush=True)
    print(f"[jepsen_like] summary: {root / 'summary.md'}", flush=True)
    return 0 if valid and results else 1


def _summarise(k: int, opts: RunOptions, code: int, seconds: float) -> dict[str, Any]:
    report = pathlib.Path(str(opts.out))
    verdict: dict[str, Any] = {}
    if (report / "verdict.json").exists():
        verdict = json.loads((report / "verdict.json").read_text())
    stats = verdict.get("stats", {})
    return {"run": k, "workload": opts.workload,
            "nemeses": opts.nemeses, "overlap": opts.overlap, "nodes": opts.nodes, "flush": opts.flush,
            "lease_read": opts.lease_read,
            "seed": opts.seed, "valid": code == 0 and bool(verdict.get("valid")), "seconds": round(seconds, 1),
            "ops": stats.get("ops", 0), "appends_ok": stats.get("appends_ok", 0),
            "appends_info": stats.get("appends_info", 0), "reads_ok": stats.get("reads_ok", 0),
            "sends_ok": stats.get("sends_ok", 0), "sends_info": stats.get("sends_info", 0),
            "deliveries": stats.get("deliveries", 0), "changes_ok": stats.get("changes_ok", 0),
            "compactions": stats.get("compactions_dropping", 0),
            "snapshots_installed": stats.get("snapshots_installed", 0),
            "faults": verdict.get("faults", {}), "anomalies": verdict.get("counts", {"no verdict": 1}),
            "report": str(report), "replay": replay_command(opts)}  # fmt: skip


def _totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    faults: dict[str, int] = {}
    anomalies: dict[str, int] = {}
    for r in results:
        for name, n in r["faults"].items():
            faults[name] = faults.get(name, 0) + n
        for name, n in r["anomalies"].items():
            anomalies[name] = anomalies.get(name, 0) + n
    return {"runs": len(results), "valid_runs": sum(r["valid"] for r in results),
            "ops": sum(r["ops"] for r in results), "appends_ok": sum(r["appends_ok"] for r in results),
            "reads_ok": sum(r["reads_ok"] for r in results),
            "sends_ok": sum(r.get("sends_ok", 0) for r in results),
            "deliveries": sum(r.get("deliveries", 0) for r in results),
            "changes_ok": sum(r.get("changes_ok", 0) for r in results),
            "compactions": sum(r.get("compactions", 0) for r in results),
            "snapshots_installed": sum(r.get("snapshots_installed", 0) for r in results),
            "faults": faults, "anomalies": anomalies}  # fmt: skip


def _write_markdown(root: pathlib.Path, seed: int, results: list[dict[str, Any]]) -> None:
    totals = _totals(results)
    lines = [f"# jepsen_like campaign (seed {seed})", "",
             "| run | workload | nemeses | nodes | flush | seed | ops | writes ok | changes | compactions / snapshots "
             "| faults | anomalies | valid |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in results:
        faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items())
        anomalies = ", ".join(f"{k} {v}" for k, v in r["anomalies"].items()) or "none"
        flush = r["flush"] + (" +lease" if r["lease_read"] else "") + (" +overlap" if r.get("overlap") else "")
        workload = r.get("workload", "log")
        writes = r.get("sends_ok", 0) if workload == "broker" else r["appends_ok"]
        lines.append(f"| {r['run']} | {workload} | {'+'.join(r['nemeses'])} | {r['nodes']} | {flush} | {r['seed']} | "
                     f"{r['ops']} | {writes} | {r.get('changes_ok', 0)} | "
                     f"{r.get('compactions', 0)} / {r.get('snapshots_installed', 0)} | {faults} | {anomalies} | "
                     f"{'yes' if r['valid'] else 'NO'} |")  # fmt: skip
    lines += ["", f"Totals: {json.dumps(totals)}", ""]
    (root / "summary.md").write_text("\n".join(lines))
