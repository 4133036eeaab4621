"""Broker groups benchmark: aggregate produce throughput of a NameServer cluster with 1 .. N broker groups.

Run with `dledger bench broker --groups N [--seconds S] [--rounds R] [--window W] [--size BYTES] [--json PATH]`
(or `python -m bench.broker_groups ...`) from the root of a clone.

One local cluster (`LocalBrokerCluster`: a `dledger namesrv` process and N groups of three `dledger broker`
replicas, async flush, loopback) is started once. Each round drives k = 1 .. N of its groups at the same
time, in rounds that alternate k (1, 2, .., N, 1, 2, ..), so a slow minute of a shared host hurts every k.
Each driven group gets one load process of its own: an official RocketMQ 5 Python `Producer`, connected to
that group's endpoints, sending `--size`-byte bodies to a topic only that group holds (so the group serves
every send itself) with `send_async`, at most `--window` in flight, for `--seconds`; all load processes of a
round start at one agreed wall-clock instant. A send counts when acknowledged (committed on the group's
quorum); per group the rate is acknowledged sends over the time from the start to the last answer. A short
round driving every group first warms them up (topics created, connections made) and is not counted. The
report gives, per k, the median over rounds of the aggregate (the sum over the driven groups) and of each
group's rate; undriven groups stay up and idle.

Groups share nothing but the NameServer, which no send touches: with a machine per group the aggregate would
be N times one group's rate on its own machine. That is arithmetic, printed as such, not a measurement.
Timing goals live here, never in tests.
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
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Any

from bench.e2e_groups import cpu_seconds
from dledger.cli.broker_groups import LocalBrokerCluster

ROOT = pathlib.Path(__file__).resolve().parents[1]
START_SLACK_S = 8.0  # from spawning a round's load processes to their agreed start: their warm-up fits in it


def _topic(group: str) -> str:
    return f"BenchGroups-{group}"


def load(access_point: str, topic: str, seconds: float, window: int, size: int, start_at: float) -> dict[str, Any]:
    """One load process: warm up (the topic is created by the first send), wait for `start_at` (epoch
    seconds), send for `seconds`; acknowledged and failed sends, the elapsed time and where sends landed."""
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    def message(body: bytes) -> Message:
        m = Message()
        m.topic, m.body = topic, body
        return m

    producer = Producer(ClientConfiguration(access_point, Credentials(), request_timeout=10), (topic,))
    producer.startup()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                producer.send(message(b"warm-up"))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        late = time.time() - start_at
        time.sleep(max(0.0, -late))
        body = b"x" * size
        inflight: deque[Future[Any]] = deque()
        landed: Counter[str] = Counter()
        failed = 0

        def settle(fut: Future[Any]) -> None:
            nonlocal failed
            try:
                landed[fut.result(60).message_queue.message_queue0().broker.name] += 1
            except Exception:
                failed += 1

        start, cpu = time.perf_counter(), time.process_time()
        end = start + seconds
        while time.perf_counter() < end:
            if len(inflight) >= window:
                settle(inflight.popleft())
            inflight.append(producer.send_async(message(body)))
        while inflight:
            settle(inflight.popleft())
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        producer.shutdown()
    acked = sum(landed.values())
    return {
        "acked": acked,
        "failed": failed,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(acked / elapsed, 1),
        "landed": dict(landed),
        "cpu_s": round(cpu, 3),
        "started_late_s": round(max(0.0, late), 3),
    }


def _late(report: dict[str, Any]) -> str:
    late = report["started_late_s"]
    return f" (started {late} s late)" if late > 0.5 else ""


def _replica_cpu(c: LocalBrokerCluster, k: int) -> float:
    return sum(cpu_seconds(p.pid) for g in c.groups[:k] for p in g.procs.values())


def _round(c: LocalBrokerCluster, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """Drive the first `k` groups at once: {"groups": {group: its load process's report}, "replica_cpu_s": the
    CPU time the driven groups' replicas used from the agreed start to the last answer}."""
    start_at = time.time() + START_SLACK_S
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = {}
    for g in c.groups[:k]:
        argv = [sys.executable, "-m", "bench.broker_groups", "--load", g.access_point, "--topic", _topic(g.group)]
        argv += ["--seconds", str(args.seconds), "--window", str(args.window), "--size", str(args.size)]
        argv += ["--start-at", repr(start_at)]
        procs[g.group] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out: dict[str, dict[str, Any]] = {}
    try:
        time.sleep(max(0.0, start_at - time.time()))
        cpu = _replica_cpu(c, k)
        for name, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=args.seconds + START_SLACK_S + 180)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the load process of {name} failed: {stderr.strip().splitlines()[-1:]}")
            report = json.loads(stdout.strip().splitlines()[-1])
            if set(report["landed"]) - {name}:
                raise RuntimeError(f"sends meant for {name} landed on {report['landed']}")
            out[name] = report
    finally:
        for proc in procs.values():  # the others of a failed round too
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"groups": out, "replica_cpu_s": round(_replica_cpu(c, k) - cpu, 3)}


def _ms_per_message(r: dict[str, Any]) -> tuple[float, float]:
    """CPU milliseconds per acknowledged message of a round: (the driven replicas', the load processes')."""
    acked = max(1, sum(v["acked"] for v in r["groups"].values()))
    client = sum(v["cpu_s"] for v in r["groups"].values())
    return 1000 * r["replica_cpu_s"] / acked, 1000 * client / acked


def run(groups: int, seconds: float, rounds: int, window: int, size: int, json_path: str | None) -> int:
    if not 1 <= groups <= 9 or seconds <= 0 or rounds < 1 or window < 1 or size < 1:
        print("dledger bench broker: --groups 1..9; --seconds, --rounds, --window and --size positive", file=sys.stderr)
        return 2
    root = pathlib.Path(tempfile.mkdtemp(prefix="dledger-bench-groups-"))
    args = argparse.Namespace(seconds=seconds, window=window, size=size)
    load_before = os.getloadavg()
    c = LocalBrokerCluster.create(root, groups)
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in range(1, groups + 1)}
    try:
        failed = c.start_all()
        if failed:
            print(f"dledger bench broker: {failed}", file=sys.stderr)
            return 1
        print(
            f"{groups} group(s) of 3 replicas + NameServer in {root}; {rounds} round(s) of k = 1..{groups}", flush=True
        )
        warm_up = argparse.Namespace(seconds=min(seconds, 2.0), window=window, size=size)
        _round(c, groups, warm_up)  # topics created, connections made: not counted
        for r in range(rounds):
            for k in range(1, groups + 1):
                got = _round(c, k, args)
                runs[k].append(got)
                rates = ", ".join(f"{n} {v['msgs_per_s']:,.0f}{_late(v)}" for n, v in got["groups"].items())
                total = sum(v["msgs_per_s"] for v in got["groups"].values())
                replicas, client = _ms_per_message(got)
                print(
                    f"  round {r + 1}, {k} group(s): {total:,.0f} msgs/s ({rates}); "
                    f"CPU per message: replicas {replicas:.2f} ms, client {client:.2f} ms",
                    flush=True,
                )
    except (RuntimeError, ValueError, OSError) as exc:  # a load process failed or answered garbage
        print(f"dledger bench broker: {exc}", file=sys.stderr)
        return 1
    finally:
        c.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    summary = []
    for k, rs in runs.items():
        totals = [sum(v["msgs_per_s"] for v in got["groups"].values()) for got in rs]
        per_group = {n: statistics.median(got["groups"][n]["msgs_per_s"] for got in rs) for n in rs[0]["groups"]}
        costs = [_ms_per_message(got) for got in rs]
        summary.append(
            {
                "groups": k,
                "aggregate_msgs_per_s": round(statistics.median(totals)),
                "per_group": per_group,
                "aggregate_runs": [round(t) for t in totals],
                "replica_cpu_ms_per_msg": round(statistics.median(c[0] for c in costs), 3),
                "client_cpu_ms_per_msg": round(statistics.median(c[1] for c in costs), 3),
            }
        )
    cpus = os.cpu_count() or 1
    print(
        f"\nmedians of {rounds} round(s), {size} B bodies, window {window}, {seconds:g} s per round; "
        f"{cpus} CPUs, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        "| groups driven | aggregate (msgs/s) | per group (msgs/s) | CPU ms per message: replicas / client | rounds |"
    )
    print("| ---: | ---: | --- | --- | --- |")
    for row in summary:
        per = ", ".join(f"{n} {v:,.0f}" for n, v in row["per_group"].items())
        cost = f"{row['replica_cpu_ms_per_msg']:.2f} / {row['client_cpu_ms_per_msg']:.2f}"
        each = ", ".join(map(str, row["aggregate_runs"]))
        print(f"| {row['groups']} | {row['aggregate_msgs_per_s']:,} | {per} | {cost} | {each} |")
    one = summary[0]
    rate, cost = one["aggregate_msgs_per_s"], one["replica_cpu_ms_per_msg"] + one["client_cpu_ms_per_msg"]
    bound = cpus * 1000 / cost
    print("arithmetic, not a measurement (groups share nothing but the NameServer, which no send touches):")
    print(f"- a machine like this one, as loaded, per group: {groups} x {rate:,} = {groups * rate:,} msgs/s")
    print(
        f"- a machine of {cpus} CPUs per group, all of it for that group ({cost:.2f} CPU ms per message, replicas and"
        f" client): {cpus * 1000:,} / {cost:.2f} = {bound:,.0f} msgs/s a group, x {groups} = {groups * bound:,.0f}"
    )
    if json_path:
        report = {"args": {"groups": groups, "seconds": seconds, "rounds": rounds, "window": window, "size": size},
                  "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
                  "summary": summary, "rounds": {str(k): rs for k, rs in runs.items()}}  # fmt: skip
        pathlib.Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON in {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench.broker_groups",
        description=__doc__.splitlines()[0],
        epilog="options as `dledger bench broker --help` explains",
    )
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--load", metavar="ENDPOINTS", help=argparse.SUPPRESS)  # a load process of one round
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.load:
        print(json.dumps(load(a.load, a.topic, a.seconds, a.window, a.size, a.start_at)), flush=True)
        return 0
    return run(a.groups, a.seconds, a.rounds, a.window, a.size, a.json)


if __name__ == "__main__":
    sys.exit(main())
