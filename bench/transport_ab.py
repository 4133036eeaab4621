"""A/B of the two peer transports (`--peer-transport grpc` against `tcp`) on this tree, in one command.

`python -m bench.transport_ab [--rounds 3] [--seconds 4] [--cases lat-in,lat,1k-x1,1k-x64,64k-x64]`
runs, for each round and each case, a fresh 3-node group of `dledger node` processes (async flush, peer
secret, loopback) once per transport, alternating which goes first, so that a slow minute of the machine
hurts both. Cases:
- `lat-in`: 2,000 synchronous 1 KiB appends from inside the leader's process (`bench.embedded_node`),
  p50 / p99 in ms: the replication round trip with no client hop;
- `lat`: the same from one client process over the client API;
- `1k-x1`, `1k-x64`, `64k-x64`: throughput (entries/s) of single 1 KiB appends with 256 in flight, of
  batches of 64 1 KiB entries, and of batches of 64 64 KiB entries, and what each entry cost the three
  nodes in CPU (`cpu_us`, µs: on a host shared with other work the rate follows the share of the cores
  the nodes got, which swings from run to run; the cost per entry is what the transport decides).
It prints each run, then per case the medians and the ratio tcp / grpc (for latency and CPU grpc / tcp, so
above 1 means tcp is better either way), and writes the whole result as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import statistics
import tempfile
from typing import Any

from bench.e2e_groups import DledgerGroup

KiB = 1024
TRANSPORTS = ("grpc", "tcp")
# name -> (payload, batch, inflight (0: inside the leader), max requests or 0 for a timed run)
CASES: dict[str, tuple[int, int, int, int]] = {
    "lat-in": (KiB, 1, 0, 2000),
    "lat": (KiB, 1, 1, 2000),
    "1k-x1": (KiB, 1, 256, 0),
    "1k-x64": (KiB, 64, 64, 0),
    "64k-x64": (64 * KiB, 64, 4, 0),
}


def run_one(case: str, transport: str, seconds: float, attempts: int = 2) -> dict[str, Any]:
    """One run on a fresh group; a run whose load client's report came back unreadable (seen on a host
    loaded far beyond its cores) is run again, up to `attempts` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return _run_once(case, transport, seconds)
        except (RuntimeError, ValueError) as exc:
            if attempt == attempts:
                raise
            print(f"  {case} {transport}: run failed ({str(exc)[:120]}); running it again", flush=True)
    raise AssertionError("unreachable")


def _run_once(case: str, transport: str, seconds: float) -> dict[str, Any]:
    payload, batch, inflight, max_ops = CASES[case]
    root = pathlib.Path(tempfile.mkdtemp(prefix="dledger-transport-ab-"))
    group = DledgerGroup(root, 3, "async", embedded=inflight == 0, peer_transport=transport)
    try:
        group.start()
        group.wait_ready()
        if inflight == 0:
            r = group.embedded_load(payload, max_ops)
        else:
            r = group.load(payload, batch, inflight, seconds if not max_ops else 120.0, max_ops or (1 << 40))
    finally:
        group.stop()
        shutil.rmtree(root, ignore_errors=True)
    lat = sorted(r["lat_ms"][20:])  # the first appends warm up connections and caches
    cpu = r.get("cpu_s")
    node_cpu = cpu["leader"] + cpu["followers"] if cpu else None
    return {
        "rate": r["entries"] / r["seconds"],
        # CPU seconds of the three nodes per million entries (µs per entry): on a shared host the rate
        # follows the share of the cores the nodes got, this what each entry cost them
        "cpu_us": 1e6 * node_cpu / r["entries"] if node_cpu is not None and r["entries"] else None,
        "p50": lat[len(lat) // 2] if lat else None,
        "p99": lat[int(len(lat) * 0.99)] if lat else None,
        "errors": r["errors"],
    }


def _median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    rows = []
    for case, by_transport in runs.items():
        latency = CASES[case][3] != 0
        keys = ("p50", "p99") if latency else ("rate", "cpu_us")
        for key in keys:
            med = {t: _median([r[key] for r in by_transport[t]]) for t in TRANSPORTS}
            g, t = med["grpc"], med["tcp"]
            lower_better = latency or key == "cpu_us"
            ratio = None if not g or not t else (g / t if lower_better else t / g)
            rows.append({"case": case, "figure": key, "grpc": g, "tcp": t, "ratio": ratio})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.transport_ab", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="length of each timed throughput run")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--json", metavar="PATH", help="write the runs and the summary here")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {t: [] for t in TRANSPORTS} for c in cases}
    for k in range(args.rounds):
        for case in cases:
            order = TRANSPORTS if k % 2 == 0 else TRANSPORTS[::-1]
            for transport in order:
                r = run_one(case, transport, args.seconds)
                runs[case][transport].append(r)
                print(f"round {k + 1} {case:8} {transport:4} rate {r['rate']:10.0f}/s  p50 {r['p50'] or 0:6.3f} ms"
                      f"  p99 {r['p99'] or 0:6.3f} ms  cpu {r['cpu_us'] or 0:7.1f} us/entry  errors {r['errors']}",
                      flush=True)  # fmt: skip
    rows = summarize(runs)
    print(f"\nmedians of {args.rounds} rounds (ratio: tcp better above 1)")
    for row in rows:
        g, t, ratio = row["grpc"], row["tcp"], row["ratio"]
        unit = {"rate": "/s", "cpu_us": "us"}.get(row["figure"], "ms")
        print(f"{row['case']:8} {row['figure']:4}  grpc {g or 0:10.3f} {unit}  tcp {t or 0:10.3f} {unit}"
              f"  ratio {ratio or 0:5.2f}x")  # fmt: skip
    if args.json:
        machine = {"python": platform.python_version(), "machine": platform.machine(), "processor": _cpu()}
        pathlib.Path(args.json).write_text(json.dumps({"machine": machine, "runs": runs, "summary": rows}, indent=1))
    return 0


def _cpu() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
