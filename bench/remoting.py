"""Remoting benchmark: RocketMQ 4.x producers (the official C++ client) against raw replicated appends, on one
3-replica group of `dledger broker` processes registered with a `dledger namesrv`.

Run with `python -m bench.remoting [--seconds 10] [--producers 3] [--size 1024] [--json PATH]` (it needs the
C++ client installed as the remoting tests find it; see tests/rocketmq_remoting/util.py).

In one run, on the same group (async flush):
- raw: `--raw-tasks` concurrent appends of `--size` bytes through the asyncio client to the leader, one entry
  per append, for `--seconds`;
- remoting: `--producers` C++-client processes, each sending `--size`-byte messages for `--seconds` (with
  send_async and at most 32 sends outstanding, or `--mode sync`: send_sync in a loop), while one push
  consumer process consumes the topic: produce throughput (acknowledged sends per second), consume
  throughput, and end-to-end latency (send call to the consumer's callback) p50 / p99 over the messages
  both saw;
and `ratio` = remoting produce rate / raw append rate; `log_entries_per_s` counts the group's committed
entries while the producers ran (concurrent sends share one entry: sends per entry is the group commit);
`cpu_us_per_message` is the CPU time (Linux /proc) spent per raw append and per acknowledged send, by the
leader and by every process of the phase (the three replicas and the client process(es): for remoting the
producers and the consumer). On a machine shared with other work the rates move with its load, the CPU
per message much less. Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

from bench.namesrv_flip import NamesrvProcess
from dledger.cli.broker_groups import RegisteringGroup
from dledger.client.aio_client import AsyncDLedgerClient
from dledger.rocketmq.remoting.codes import RequestCode, ResponseCode
from dledger.rocketmq.remoting.command import RemotingCommand
from dledger.rocketmq.remoting.transport import invoke
from tests.rocketmq_remoting.util import Worker, eventually
from tests.rocketmq_v5.util import leader_id, message, producer, send_eventually

TOPIC = "BenchRemoting"


async def _raw(peers: dict[str, str], group: str, seconds: float, tasks: int, size: int) -> tuple[float, int]:
    """(appends per second, appends made)."""
    payload = b"r" * size
    done = 0
    async with AsyncDLedgerClient(peers, group=group) as client:
        await client.append(payload)  # connected, leader known
        end = time.monotonic() + seconds

        async def one() -> None:
            nonlocal done
            while time.monotonic() < end:
                await client.append(payload)
                done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(tasks)))
        return done / (time.monotonic() - t0), done


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far (Linux /proc; 0.0 where it cannot tell)."""
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _us_per(cpu_s: float, count: float) -> int:
    return round(cpu_s * 1e6 / count) if count else 0


async def _commit_index(peers: dict[str, str], group: str) -> int:
    async with AsyncDLedgerClient(peers, group=group) as client:
        return await client.read_index()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(args: argparse.Namespace, root: pathlib.Path) -> dict[str, Any]:
    ns = NamesrvProcess(root / "namesrv")
    group = RegisteringGroup.with_namesrv(root / "group", ns.address, group="bench")
    ns.start()
    group.start_all()
    workers: list[Worker] = []
    try:
        with producer(group) as p:
            send_eventually(p, message("warmup", b"warmup"))
        leader = leader_id(group)
        create = {"topic": TOPIC, "readQueueNums": "8", "writeQueueNums": "8"}  # registers it at once
        request = RemotingCommand.request(RequestCode.UPDATE_AND_CREATE_TOPIC, create)
        assert asyncio.run(invoke(group.remoting[leader], request)).code == ResponseCode.SUCCESS
        print(f"leader {leader}; raw appends for {args.seconds} s", file=sys.stderr)
        nodes = [p.pid for p in group.procs.values()]
        leader_pid = [group.procs[leader].pid]
        cpu0 = (_cpu_s(leader_pid), _cpu_s(nodes), time.process_time())
        # the raw client's CPU is this process's own: it does nothing else meanwhile
        raw, raw_count = asyncio.run(_raw(group.peers, group.group, args.seconds, args.raw_tasks, args.size))
        raw_cpu = (_cpu_s(leader_pid) - cpu0[0], _cpu_s(nodes) - cpu0[1] + time.process_time() - cpu0[2])
        out = root / "workers"
        out.mkdir()
        cons = Worker(out, "consumer", "consume", "--namesrv", ns.address, "--topic", TOPIC, "--group", "bench-c")
        workers.append(cons)
        cons.wait_started()
        prods = [
            Worker(
                out,
                f"p{k}",
                "produce",
                "--namesrv",
                ns.address,
                "--topic",
                TOPIC,
                "--group",
                "bench-p",
                "--count",
                "-1",
                "--pad",
                str(args.size),
                "--prefix",
                f"p{k}",
                "--mode",
                args.mode,
            )
            for k in range(args.producers)
        ]
        workers += prods
        for w in prods:
            w.wait_started()
        print(f"remoting: {args.producers} producers for {args.seconds} s", file=sys.stderr)
        eventually("the first acknowledged sends", lambda: all(w.records()[1:] for w in prods), 60)
        index_start = asyncio.run(_commit_index(group.peers, group.group))
        everyone = nodes + [w.proc.pid for w in workers]
        producers = [w.proc.pid for w in prods]
        cpu1 = (_cpu_s(leader_pid), _cpu_s(everyone), _cpu_s(producers), _cpu_s([cons.proc.pid]))
        t_start = time.time()
        time.sleep(args.seconds)
        t_end = time.time()
        rem_cpu = (
            _cpu_s(leader_pid) - cpu1[0],
            _cpu_s(everyone) - cpu1[1],
            _cpu_s(producers) - cpu1[2],
            _cpu_s([cons.proc.pid]) - cpu1[3],
        )
        index_end = asyncio.run(_commit_index(group.peers, group.group))
        for w in prods:
            w.kill()
        sent = [r for w in prods for r in w.records() if r.get("status") == "OK"]
        window = [r for r in sent if t_start <= r["t"] < t_end]
        produce_rate = len(window) / (t_end - t_start)
        want = {r["body"] for r in sent}
        eventually("the consumer to catch up", lambda: want <= {m["body"] for m in cons.messages()}, 300)
        got = {}
        for m in cons.messages():
            got.setdefault(m["body"], m["t"])
        times = sorted(got[b] for b in want)
        consume_rate = len(times) / max(times[-1] - times[0], 1e-9)
        latency = [(got[r["body"]] - r["t0"]) * 1000 for r in sent if r["body"] in got]
        return {
            "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
            "size": args.size,
            "producers": args.producers,
            "raw_appends_per_s": round(raw),
            "remoting_sends_per_s": round(produce_rate),
            "ratio": round(produce_rate / raw, 2),
            "log_entries_per_s": round((index_end - index_start) / (t_end - t_start)),
            "cpu_us_per_message": {
                "raw": {"leader": _us_per(raw_cpu[0], raw_count), "all": _us_per(raw_cpu[1], raw_count)},
                "remoting": {
                    name: _us_per(cpu, len(window))
                    for name, cpu in zip(("leader", "all", "producers", "consumer"), rem_cpu, strict=True)
                },
            },
            "consume_per_s": round(consume_rate),
            "e2e_latency_ms": {"p50": round(statistics.median(latency), 1), "p99": round(_pct(latency, 0.99), 1)},
            "messages": len(sent),
            "first_receive_after_first_send_s": round(min(got.values()) - min(r["t0"] for r in sent), 2),
        }
    finally:
        for w in workers:
            w.kill()
        group.stop_all()
        ns.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.remoting")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--raw-tasks", type=int, default=32)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--mode", default="async", choices=["async", "sync"], help="the producers' send call")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dledger-bench-remoting-") as tmp:
        report = run(args, pathlib.Path(tmp))
    print(json.dumps(report, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
