"""Failover benchmark: SIGKILL of the leader -> first acknowledged append on the new leader, N runs.

`python -m bench.failover [--runs 20] [--flush async|sync] [--json PATH]` starts a local 3-node group with
the default timeouts (election timeout 200 ms, heartbeat 40 ms); each run waits for a healthy group, kills
the leader, times the first acknowledged append, then restarts the killed node and waits until it caught up.
Prints every run, the median and the maximum.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time

from dledger.server.client import DLedgerClient
from dledger.server.client_policy import DLedgerError
from dledger.server.demo import time_failover
from dledger.server.launcher import LocalProcessGroup


def _leader(client: DLedgerClient, live: set[str]) -> str | None:
    try:
        nodes = client.status(timeout=0.3)
    except DLedgerError:
        return None
    leaders = {n.id for n in nodes if n.reachable and n.role == "leader" and n.id in live}
    caught_up = len({n.applied_index for n in nodes if n.reachable}) == 1 and all(n.reachable for n in nodes)
    return next(iter(leaders)) if len(leaders) == 1 and caught_up else None


def run(runs: int, flush: str) -> list[float]:
    root = tempfile.mkdtemp(prefix="dledger-failover-")
    group = LocalProcessGroup.create(root, 3, group="failover", flush=flush)
    times: list[float] = []
    try:
        group.start_all()
        with DLedgerClient(group.peers, group="failover", timeout=10) as client:
            for k in range(runs):
                deadline = time.monotonic() + 30
                while (leader := _leader(client, set(group.peers))) is None:
                    if time.monotonic() > deadline:
                        raise SystemExit("no healthy group within 30 s")
                    time.sleep(0.05)
                client.append_batch([b"warm-up"] * 8)
                dt = time_failover(group, leader)
                times.append(dt)
                print(f"run {k + 1:2d}/{runs}: killed {leader}, first ack after {dt * 1000:.0f} ms", flush=True)
                group.start(leader)
    finally:
        group.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--flush", choices=("async", "sync"), default="async")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    times = run(args.runs, args.flush)
    result = {"runs": len(times), "median_s": statistics.median(times), "max_s": max(times), "times_s": times}
    print(f"failover over {len(times)} runs: median {result['median_s'] * 1000:.0f} ms, "
          f"max {result['max_s'] * 1000:.0f} ms")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
