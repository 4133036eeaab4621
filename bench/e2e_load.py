"""A load-generating client process for `bench/e2e.py`: appends to a dledger group and reports one JSON line.

    python -m bench.e2e_load --peers "n0-127.0.0.1:P;..." --group bench --payload 1024 --batch 1 \
        --inflight 128 --seconds 5 [--start-at MONOTONIC] [--max-ops N]

`inflight` asyncio tasks share one `AsyncDLedgerClient`; each appends one request (of `batch` entries) at a
time in a loop until `seconds` pass or `max_ops` requests were issued. The report counts acknowledged
entries, failed requests, the wall time including the drain of the last requests, and a latency sample.
`--start-at` (a `time.monotonic()` value, system-wide on Linux) lines several client processes up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.node import tuning
from dledger.node.tuning import tune_gc

MAX_SAMPLES = 200_000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = os.urandom(args.payload)
    items = [data] * args.batch
    lats: list[float] = []
    counts = {"ok": 0, "err": 0, "issued": 0}
    errors: dict[str, int] = {}
    async with AsyncDLedgerClient(
        args.peers, group=args.group, timeout=5.0, rpc_timeout=5.0, streaming=not args.unary
    ) as client:
        # connect and find the leader before the clock starts (10 s at most)
        warm_until = time.monotonic() + 10.0
        while time.monotonic() < warm_until:
            try:
                await client.append_batch([data], timeout=2.0)
                break
            except Exception:
                await asyncio.sleep(0.1)
        tune_gc()  # as the nodes do (PySyncObj's peers too: bench.pysyncobj_peer)
        if args.start_at:
            await asyncio.sleep(max(0.0, args.start_at - time.monotonic()))
        start = time.perf_counter()
        cpu0 = time.process_time()
        deadline = start + args.seconds

        async def worker() -> None:
            while counts["issued"] < args.max_ops and time.perf_counter() < deadline:
                counts["issued"] += 1
                t0 = time.perf_counter()
                try:
                    if args.batch == 1:
                        await client.append(data)
                    else:
                        await client.append_batch(items)
                except Exception as exc:
                    counts["err"] += 1
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    await asyncio.sleep(0.01)
                    continue
                counts["ok"] += 1
                if len(lats) < MAX_SAMPLES:
                    lats.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(worker() for _ in range(args.inflight)))
        seconds = time.perf_counter() - start
    return {
        "ok": True,
        "requests_ok": counts["ok"],
        "entries": counts["ok"] * args.batch,
        "errors": counts["err"],
        "error_kinds": errors,
        "seconds": seconds,
        "cpu_s": time.process_time() - cpu0,
        "lat_ms": lats,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--peers", required=True)
    p.add_argument("--group", default="bench")
    p.add_argument("--payload", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--max-ops", type=int, default=1 << 40)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--unary", action="store_true", help="one unary Append call per request (no AppendStream)")
    args = p.parse_args(argv)
    result = tuning.run(run(args))  # the loop dledger's nodes run on (uvloop when installed)
    # the loop may leave the stdout pipe non-blocking: a report larger than the pipe's buffer, read by a
    # busy parent, would then be cut short
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
