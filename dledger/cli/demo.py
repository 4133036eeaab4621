"""`dledger demo`: a local 3-node group through a failover, end to end, in well under a minute (`--broker
--groups N`: a NameServer and N broker groups instead, dledger/cli/demo_groups.py).

Steps: start three node processes; append with a progress bar; SIGKILL the leader and time the failover
(kill -> first acknowledged append on the new leader); append more; restart the killed node and watch it
catch up; stop every node and check that the three replicas hold identical committed logs (CRCs checked on
every read); remove the temporary directory. Exit code 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

from dledger.cli.cluster import with_lag
from dledger.cli.demo_groups import run_broker_demo
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError
from dledger.commitlog import SegmentedLog
from dledger.testing.launcher import LocalProcessGroup, stop_on_terminate

__all__ = ["add_demo_command", "run_demo", "time_failover"]


def _say(text: str) -> None:
    print(text, flush=True)


def _progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = width * done // total
    rate = done / max(time.monotonic() - started, 1e-9)
    end = "\n" if done == total else ""
    sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {rate:,.0f} entries/s{end}")
    sys.stdout.flush()


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except DLedgerError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.02)


def _leader(client: DLedgerClient, among: set[str]) -> str | None:
    leaders = {n.id for n in client.status(timeout=0.3) if n.reachable and n.role == "leader" and n.id in among}
    return next(iter(leaders)) if len(leaders) == 1 else None


def time_failover(group: LocalProcessGroup, leader: str, timeout: float = 20.0) -> float:
    """SIGKILL `leader`; seconds from the kill to the first append acknowledged by the group."""
    with DLedgerClient(group.peers, group=group.group, timeout=0.5, rpc_timeout=0.25) as probe:
        killed_at = time.monotonic()
        group.kill(leader)

        def acknowledged() -> bool:
            try:
                probe.append(b"failover-probe")
                return True
            except DLedgerError:
                return False

        _wait(acknowledged, timeout, "an acknowledged append after the kill")
        return time.monotonic() - killed_at


def _append_many(client: DLedgerClient, count: int, batch: int, tag: str) -> int:
    started = time.monotonic()
    done = 0
    while done < count:
        n = min(batch, count - done)
        client.append_batch([f"{tag}-{done + k}".encode() for k in range(n)])
        done += n
        _progress(done, count, started)
    return done


def _compare_replicas(group: LocalProcessGroup, upto: int) -> None:
    logs = {}
    for node_id in group.peers:
        with SegmentedLog.open(group.root / node_id / "log") as log:
            logs[node_id] = log.read(1, upto + 1)
    first = next(iter(logs.values()))
    for node_id, entries in logs.items():
        if entries != first:
            raise AssertionError(f"replica {node_id} differs from the others")
    _say(f"  all {len(logs)} replicas hold the same {upto} committed entries (every CRC checked)")


def run_demo(entries: int = 2000, batch: int = 50, keep: str | None = None) -> int:
    root = pathlib.Path(keep) if keep else pathlib.Path(tempfile.mkdtemp(prefix="dledger-demo-"))
    group = LocalProcessGroup.create(root, 3, group="demo")
    try:
        _say(f"1. starting 3 nodes in {root}: {', '.join(f'{i}={a}' for i, a in group.peers.items())}")
        group.start_all()
        with DLedgerClient(group.peers, group="demo", timeout=10) as client:
            t0 = time.monotonic()
            leader = _wait(lambda: _leader(client, set(group.peers)), 20, "an election")
            _say(f"   {leader} was elected leader in {time.monotonic() - t0:.2f} s")

            _say(f"2. appending {entries} entries in batches of {batch}")
            _append_many(client, entries, batch, "before")

            _say(f"3. killing the leader {leader} with SIGKILL")
            failover = time_failover(group, leader)
            survivors = set(group.peers) - {leader}
            new_leader = _wait(lambda: _leader(client, survivors), 10, "a new leader")
            _say(f"   new leader {new_leader}; failover (kill -> first acknowledged append): {failover * 1000:.0f} ms")

            _say(f"4. appending {entries // 2} more entries with {leader} down")
            _append_many(client, entries // 2, batch, "after")

            _say(f"5. restarting {leader}; it catches up as a follower")
            group.start(leader)
            t1 = time.monotonic()

            def caught_up() -> bool:
                nodes = client.status(timeout=0.3)
                lag = {n.id: lag for n, lag in with_lag(nodes)}
                return lag.get(leader) == 0

            _wait(caught_up, 30, f"{leader} catching up")
            _say(f"   {leader} caught up in {time.monotonic() - t1:.2f} s")
            commit = max(n.commit_index for n in client.status(timeout=0.5) if n.reachable)
            _wait(lambda: all(n.applied_index >= commit for n in client.status(timeout=0.3)), 10, "apply everywhere")

        _say("6. stopping every node and comparing the replicas")
        group.stop_all()
        _compare_replicas(group, commit)
        _say(f"done: {entries + entries // 2} entries, one leader killed, failover {failover * 1000:.0f} ms, "
             "no acknowledged entry lost")  # fmt: skip
        return 0
    except (TimeoutError, AssertionError, DLedgerError) as exc:
        _say(f"demo failed: {exc}")
        for node_id in group.peers:
            log = root / f"{node_id}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-5:]
                _say(f"--- {node_id}.log (last lines)\n" + "\n".join(tail))
        return 1
    finally:
        group.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def add_demo_command(sub: Any) -> None:
    p = sub.add_parser("demo", help="a local 3-node group (or broker groups) through a leader failure, end to end")
    p.add_argument("--entries", type=int, default=2000, help="entries to append before the failure")
    p.add_argument("--batch", type=int, default=50, help="entries per append request")
    p.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (default: a temp dir, removed)")
    p.add_argument("--broker", action="store_true", help="a NameServer and broker groups, the official client")
    p.add_argument("--groups", type=int, default=2, help="with --broker: broker groups of 3 replicas (2-9)")
    p.add_argument("--messages", type=int, default=100, help="with --broker: messages sent before the failure")
    p.set_defaults(func=lambda a: _checked(a))


def _checked(args: argparse.Namespace) -> int:
    if args.broker:
        if not 2 <= args.groups <= 9 or args.messages < 1:
            print("dledger demo --broker: --groups must be between 2 and 9 and --messages >= 1", file=sys.stderr)
            return 2
        stop_on_terminate()
        return run_broker_demo(args.groups, args.messages, args.keep)
    if args.entries < 2 or args.batch < 1:
        print("dledger demo: --entries must be >= 2 and --batch >= 1", file=sys.stderr)
        return 2
    stop_on_terminate()  # SIGTERM stops the demo's nodes as Ctrl-C does
    return run_demo(args.entries, args.batch, args.keep)
