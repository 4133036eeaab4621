"""A/B: the asyncio client's AppendStream against one unary Append call per request, same group, same run.

`python -m bench.stream_ab [--runs 3] [--seconds 5] [--payload 1024] [--inflight 256] [--flush async]`
starts one 3-node group, then alternates unary and streamed load runs (single appends, `inflight` in
flight, one client process) and prints each run, the medians, the ratio, and the leader's CPU per entry.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.e2e_groups import DledgerGroup


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_ab", description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--payload", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--flush", choices=("async", "sync"), default="async")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dledger-stream-ab-"))
    group = DledgerGroup(root, 3, args.flush)
    rates: dict[str, list[float]] = {"unary": [], "stream": []}
    cpu: dict[str, list[float]] = {"unary": [], "stream": []}
    try:
        group.start()
        group.wait_ready()
        for k in range(args.runs):
            for mode in ("unary", "stream"):
                group.load_flags = ("--unary",) if mode == "unary" else ()
                r = group.load(args.payload, args.batch, args.inflight, args.seconds, 1 << 40)
                rate = r["entries"] / r["seconds"]
                us = 1e6 * r["cpu_s"]["leader"] / max(1, r["entries"])
                rates[mode].append(rate)
                cpu[mode].append(us)
                print(
                    f"run {k + 1} {mode:6s}: {rate:9.0f} entries/s, leader CPU {us:6.1f} us/entry, "
                    f"errors {r['errors']} {r['error_kinds']}",
                    flush=True,
                )
    finally:
        group.stop()
        shutil.rmtree(root, ignore_errors=True)
    u, s = statistics.median(rates["unary"]), statistics.median(rates["stream"])
    print(
        f"median: unary {u:.0f}/s, stream {s:.0f}/s, ratio {s / u:.2f}x; leader CPU per entry "
        f"{statistics.median(cpu['unary']):.1f} -> {statistics.median(cpu['stream']):.1f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
