"""Broker benchmark: `MessageStore.put_messages` against raw replicated appends on the same 3-node group.

Run with `python -m bench.broker [--quick] [--json PATH] [--dir DIR] [--flush async|sync] [--in-process]`.

One group of three replicas (real gRPC on loopback), each a process of its own as real brokers are
(`--in-process`: all in this process, sharing one GIL), each with a `MessageStore` registered as its state
machine. In alternating rounds, `--producers` tasks in the master's process either
- put: `store.put_messages(batch)` with `--batch` messages of `--size` bytes (one log entry per batch; the
  store validates, stamps, encodes, and every replica applies it to LMDB consume queues and indexes), or
- raw: `server.append(items)` with the same number of items of the same size (one entry per item; the
  store skips foreign entries),
each for `--seconds`; the rates are medians over rounds, and `ratio` is the median of put / raw
(messages per second) over pairs of adjacent rounds, which keeps it steady when the machine's load changes.
Then a follower's store reads every stored message back through `get_messages` (32 per call), queue by queue.
Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from dledger.broker_adapter import GetStatus, Message, MessageStore, StoreOptions
from dledger.node.config import NodeConfig, read_peer_secret
from dledger.testing.launcher import ensure_peer_secret, free_ports

IDS = ("n0", "n1", "n2")
TOPIC = "Bench"
QUEUES = 8


@dataclass
class Report:
    mode: str
    flush: str
    size: int
    batch: int
    producers: int
    rounds: int
    raw_msgs_per_s: float
    put_msgs_per_s: float
    ratio: float
    pair_ratios: list[float]
    put_mb_per_s: float
    follower_get_msgs_per_s: float
    follower_get_mb_per_s: float
    messages_read: int
    rounds_retried_after_leader_change: int


async def _run_for(seconds: float, producers: int, one: object) -> int:
    """Run `producers` loops of `await one()` for `seconds`; the number of completed calls."""
    done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        while loop.time() < deadline:
            await one()  # type: ignore[operator]
            done += 1

    await asyncio.gather(*(worker() for _ in range(producers)))
    return done


class Replica:
    """One replica (a MessageStore on its own node) and the work the driver asks of it."""

    def __init__(self, node_id: str, peers: dict[str, str], root: pathlib.Path, flush: str) -> None:
        mode: Literal["sync", "async"] = "sync" if flush == "sync" else "async"
        secret = read_peer_secret(ensure_peer_secret(root))
        config = NodeConfig(
            self_id=node_id, peers=peers, store_dir=root / node_id, group="bench", flush=mode, peer_secret=secret
        )
        self.store = MessageStore.create(config, StoreOptions(retention_interval_s=0, default_queue_count=QUEUES))

    async def call(self, op: str, *a: Any) -> Any:
        store = self.store
        if op == "start":
            await store.start()
            return None
        if op == "stop":
            await store.stop()
            return None
        if op == "master":
            return store.is_master
        if op == "applied":
            return store.last_applied()
        if op == "topic":
            await store.create_topic(TOPIC, QUEUES)
            return None
        if op == "round":
            return await self.round(*a)
        if op == "read":
            return await self.read_all()
        raise ValueError(op)

    async def round(self, kind: str, seconds: float, producers: int, size: int, batch_size: int) -> float:
        store, server = self.store, self.store.server
        assert server is not None
        body = b"x" * size
        batch = [Message(TOPIC, body, tags="TagA") for _ in range(batch_size)]
        raw_items = [body] * batch_size

        async def put() -> None:
            result = await store.put_messages(batch)
            if not result.ok:
                raise RuntimeError(f"put failed: {result.status} {result.reason}")

        async def raw() -> None:
            await server.append(raw_items)

        start = time.perf_counter()
        calls = await _run_for(seconds, producers, put if kind == "put" else raw)
        return calls * batch_size / (time.perf_counter() - start)

    async def read_all(self) -> tuple[int, int, float]:
        read = read_bytes = 0
        start = time.perf_counter()
        for queue in range(QUEUES):
            offset = 0
            while True:
                got = await self.store.get_messages("bench", TOPIC, queue, offset, max_count=32)
                if got.status is not GetStatus.FOUND:
                    break
                read += len(got.messages)
                read_bytes += sum(len(m.message.body) for m in got.messages)
                offset = got.next_offset
        return read, read_bytes, time.perf_counter() - start


def _serve(node_id: str, peers: dict[str, str], root: str, flush: str, conn: Connection) -> None:
    """A child process: one replica, driven over `conn` with (op, args) -> result."""

    async def main() -> None:
        replica = Replica(node_id, peers, pathlib.Path(root), flush)
        loop = asyncio.get_running_loop()
        while True:
            op, args = await loop.run_in_executor(None, conn.recv)
            try:
                conn.send(("ok", await replica.call(op, *args)))
            except Exception as exc:
                conn.send(("error", repr(exc)))
            if op == "stop":
                return

    asyncio.run(main())


class Remote:
    def __init__(self, node_id: str, peers: dict[str, str], root: pathlib.Path, flush: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(node_id, peers, str(root), flush, child), daemon=True)
        self.proc.start()

    async def call(self, op: str, *a: Any) -> Any:
        self.conn.send((op, a))
        status, value = await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)
        if status != "ok":
            raise RuntimeError(f"{op}: {value}")
        return value


async def bench(args: argparse.Namespace, root: pathlib.Path) -> Report:
    peers = {i: f"127.0.0.1:{p}" for i, p in zip(IDS, free_ports(len(IDS)), strict=True)}
    replicas: dict[str, Replica | Remote] = {}
    for node_id in IDS:
        if args.in_process:
            replicas[node_id] = Replica(node_id, peers, root, args.flush)
        else:
            replicas[node_id] = Remote(node_id, peers, root, args.flush)
    try:
        for replica in replicas.values():
            await replica.call("start")
        loop = asyncio.get_running_loop()

        async def find_master() -> Replica | Remote:
            deadline = loop.time() + 20
            while loop.time() < deadline:
                await asyncio.sleep(0.05)
                for replica in replicas.values():
                    if await replica.call("master"):
                        return replica
            raise RuntimeError("no master elected")

        master = await find_master()
        await master.call("topic")
        shape = (args.producers, args.size, args.batch)
        retries = 0

        async def round_(kind: str, seconds: float) -> float:
            """One round on the current master; a round cut by a leader change is run again."""
            nonlocal master, retries
            while True:
                try:
                    rate: float = await master.call("round", kind, seconds, *shape)
                    return rate
                except RuntimeError as exc:
                    retries += 1
                    if ("NOT_LEADER" not in str(exc) and "not the master" not in str(exc)) or retries > 5:
                        raise
                    master = await find_master()

        await round_("put", min(args.seconds, 0.5))  # warm up both paths
        await round_("raw", min(args.seconds, 0.5))
        raw_rates, put_rates = [], []
        for _ in range(args.rounds):
            raw_rates.append(await round_("raw", args.seconds))
            put_rates.append(await round_("put", args.seconds))
        raw_rate, put_rate = statistics.median(raw_rates), statistics.median(put_rates)
        # each put round is paired with the raw round just before it, so a load change on a shared machine
        # moves both sides of a pair; the ratio is the median of the pairs' ratios
        pairs = [p / r for p, r in zip(put_rates, raw_rates, strict=True)]
        ratio = statistics.median(pairs)
        follower = next(r for r in replicas.values() if r is not master)
        target = await master.call("applied")
        deadline = loop.time() + 60
        while await follower.call("applied") < target:
            if loop.time() > deadline:
                raise RuntimeError("the follower did not catch up")
            await asyncio.sleep(0.05)
        read, read_bytes, elapsed = await follower.call("read")
        return Report(
            mode="in-process" if args.in_process else "process per replica",
            flush=args.flush,
            size=args.size,
            batch=args.batch,
            producers=args.producers,
            rounds=args.rounds,
            raw_msgs_per_s=round(raw_rate),
            put_msgs_per_s=round(put_rate),
            ratio=round(ratio, 3),
            pair_ratios=[round(x, 2) for x in pairs],
            put_mb_per_s=round(put_rate * args.size / 1e6, 2),
            follower_get_msgs_per_s=round(read / elapsed),
            follower_get_mb_per_s=round(read_bytes / elapsed / 1e6, 2),
            messages_read=read,
            rounds_retried_after_leader_change=retries,
        )
    finally:
        for replica in replicas.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(replica.call("stop"), 10)
        for replica in replicas.values():
            if isinstance(replica, Remote):
                replica.proc.join(5)
                if replica.proc.is_alive():
                    replica.proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (for CI smoke runs)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round and side")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--size", type=int, default=1024, help="message body bytes")
    parser.add_argument("--batch", type=int, default=32, help="messages per put / items per raw append")
    parser.add_argument("--producers", type=int, default=8, help="concurrent producer tasks")
    parser.add_argument("--flush", choices=("async", "sync"), default="async")
    parser.add_argument("--in-process", action="store_true", help="all replicas in this process (one GIL)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the report here")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (1.0 if args.quick else 1.5)
    args.rounds = args.rounds or (3 if args.quick else 7)
    root = pathlib.Path(tempfile.mkdtemp(prefix="dledger-bench-broker-", dir=args.dir))
    try:
        report = asyncio.run(bench(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for key, value in asdict(report).items():
        print(f"{key:>26}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
