"""Client-observed failover: a sequential append loop across a SIGKILL of the leader, N runs.

`python -m bench.failover --client sync|async [--runs 20] [--flush async|sync] [--json PATH]` starts a local
3-node group (node processes on loopback, default timeouts) and one long-lived client with default settings
(`DLedgerClient` or `AsyncDLedgerClient`) that appends one entry after another for the whole benchmark, as
an application would. Each run waits for a healthy group (one leader, every node caught up), SIGKILLs the
leader, and measures the time from the kill to the first append the client sees acknowledged in a newer
term (so an answer the old leader sent before it died never counts); then it restarts the killed node.
Appends that fail around the kill (outcome unknown, or definitely not written) are counted and retried by
the loop, as an application would. Prints every run, then the median, p90 and maximum; and, from status polls
made meanwhile, roughly how much of each run was the election and how much the client's own search.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dledger.client.aio_client import AsyncDLedgerClient
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError, NotWrittenError, OutcomeUnknownError
from dledger.testing.launcher import LocalProcessGroup

GROUP = "failover"


@dataclass
class Loop:
    """What the append loop saw: (monotonic time of the ack, term) per acknowledged append, and failures."""

    acks: list[tuple[float, int]] = field(default_factory=list)
    unknown: int = 0
    not_written: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def first_ack_after(self, t: float, term: int) -> float | None:
        first = None
        for at, ack_term in reversed(self.acks):  # acks are in time order: scan back to the kill only
            if at < t:
                break
            if ack_term > term:
                first = at
        return first


def _sync_loop(peers: dict[str, str], loop: Loop) -> None:
    with DLedgerClient(peers, group=GROUP) as client:
        k = 0
        while not loop.stop.is_set():
            k += 1
            try:
                result = client.append(b"failover-%d" % k)
                loop.acks.append((time.monotonic(), result.term))
            except OutcomeUnknownError:
                loop.unknown += 1
            except NotWrittenError:
                loop.not_written += 1


async def _async_loop(peers: dict[str, str], loop: Loop) -> None:
    async with AsyncDLedgerClient(peers, group=GROUP) as client:
        k = 0
        while not loop.stop.is_set():
            k += 1
            try:
                result = await client.append(b"failover-%d" % k)
                loop.acks.append((time.monotonic(), result.term))
            except OutcomeUnknownError:
                loop.unknown += 1
            except NotWrittenError:
                loop.not_written += 1


def _run_loop(kind: str, peers: dict[str, str], loop: Loop) -> None:
    try:
        if kind == "sync":
            _sync_loop(peers, loop)
        else:
            asyncio.run(_async_loop(peers, loop))
    except BaseException as exc:  # reported by the main thread
        loop.error = exc


def _healthy_leader(status: DLedgerClient, live: set[str]) -> tuple[str, int] | None:
    """(leader, term) when exactly one live node leads and every node answers with the same applied index."""
    try:
        nodes = status.status(timeout=0.5)
    except DLedgerError:
        return None
    if not all(n.reachable for n in nodes):
        return None
    leaders = [n for n in nodes if n.role == "leader" and n.id in live]
    if len(leaders) != 1 or max(n.applied_index for n in nodes) - min(n.applied_index for n in nodes) > 64:
        return None
    return leaders[0].id, leaders[0].term


def _wait(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while (value := cond()) is None or value is False:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.02)
    return value


@dataclass(frozen=True)
class Run:
    leader: str
    term: int
    ack_s: float  # kill -> the client's first ack in a newer term
    elected_s: float | None  # kill -> a status poll first saw a newer leader (None: the ack came first)


def _new_leader(status: DLedgerClient, term: int) -> bool:
    try:
        return any(n.reachable and n.role == "leader" and n.term > term for n in status.status(timeout=0.2))
    except DLedgerError:
        return False


def _one_run(group: LocalProcessGroup, status: DLedgerClient, loop: Loop) -> Run:
    """Kill the leader of a healthy group and time the client's first ack after it (and, by polling the
    nodes' status meanwhile, roughly when the group had a new leader)."""
    found = _wait(lambda: _healthy_leader(status, set(group.procs)), 60, "a healthy group")
    assert isinstance(found, tuple)
    leader, term = found
    before = len(loop.acks)

    def appending() -> bool:
        return len(loop.acks) > before + 10 or loop.error is not None

    _wait(appending, 30, "appends before the kill")
    killed_at = time.monotonic()
    group.kill(leader)
    elected_at: float | None = None
    deadline = killed_at + 30
    while (at := loop.first_ack_after(killed_at, term)) is None:
        if loop.error is not None:
            raise SystemExit(f"the append loop failed: {loop.error!r}")
        if time.monotonic() > deadline:
            raise SystemExit("no acknowledged append within 30 s of the kill")
        if elected_at is None and _new_leader(status, term):
            elected_at = time.monotonic()
        time.sleep(0.002)
    return Run(leader, term, at - killed_at, None if elected_at is None else elected_at - killed_at)


def run(kind: str, runs: int, flush: str) -> list[Run]:
    root = tempfile.mkdtemp(prefix="dledger-failover-")
    group = LocalProcessGroup.create(root, 3, group=GROUP, flush=flush)
    loop = Loop()
    results: list[Run] = []
    appender = threading.Thread(target=_run_loop, args=(kind, group.peers, loop), daemon=True)
    try:
        group.start_all()
        with DLedgerClient(group.peers, group=GROUP, rpc_timeout=0.5) as status:
            appender.start()
            for k in range(runs):
                unknown, not_written = loop.unknown, loop.not_written
                r = _one_run(group, status, loop)
                results.append(r)
                seen = "before" if r.elected_s is None else f"{r.elected_s * 1000:4.0f} ms"
                print(f"run {k + 1:2d}/{runs}: killed {r.leader} (term {r.term}), first ack after "
                      f"{r.ack_s * 1000:4.0f} ms (status polls saw a new leader: {seen}); "
                      f"failed around the kill: {loop.unknown - unknown} outcome unknown, "
                      f"{loop.not_written - not_written} not written", flush=True)  # fmt: skip
                group.start(r.leader)
    finally:
        loop.stop.set()
        appender.join(30)
        group.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return results


def _p90(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--client", choices=("sync", "async"), default="sync")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--flush", choices=("async", "sync"), default="async")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results = run(args.client, args.runs, args.flush)
    times = [r.ack_s for r in results]
    result = {
        "client": args.client,
        "runs": len(times),
        "median_s": statistics.median(times),
        "p90_s": _p90(times),
        "max_s": max(times),
        "times_s": times,
        "new_leader_seen_s": [r.elected_s for r in results],
    }
    print(f"{args.client} client failover over {len(times)} runs: median {result['median_s'] * 1000:.0f} ms, "
          f"p90 {result['p90_s'] * 1000:.0f} ms, max {result['max_s'] * 1000:.0f} ms")  # fmt: skip
    shares = [r.ack_s - r.elected_s for r in results if r.elected_s is not None]
    if shares:
        print(f"the client's share (first ack minus when status polls saw the new leader): "
              f"median {statistics.median(shares) * 1000:.0f} ms, max {max(shares) * 1000:.0f} ms "
              f"over {len(shares)} runs")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
