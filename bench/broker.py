"""Broker benchmark: `MessageStore.put_messages` against raw replicated appends on the same 3-node group.

Run with `python -m bench.broker [--quick] [--json PATH] [--dir DIR] [--flush async|sync]`.

One in-process group of three replicas (real gRPC on loopback), each with a `MessageStore` registered as
its state machine. In alternating rounds, `--producers` tasks on the master either
- put: `store.put_messages(batch)` with `--batch` messages of `--size` bytes (one log entry per batch; the
  store validates, stamps, encodes, and every replica applies it to LMDB consume queues and indexes), or
- raw: `server.append(items)` with the same number of items of the same size (one entry per item; the
  store skips foreign entries),
each for `--seconds`; the figures are the medians over rounds, and `ratio` is put / raw in messages per
second. Then a follower's store reads every stored message back through `get_messages` (32 per call),
queue by queue. Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from dledger.broker_adapter import GetStatus, Message, MessageStore, StoreOptions
from dledger.server.config import NodeConfig

IDS = ("n0", "n1", "n2")
TOPIC = "Bench"
QUEUES = 8


@dataclass
class Report:
    flush: str
    size: int
    batch: int
    producers: int
    rounds: int
    raw_msgs_per_s: float
    put_msgs_per_s: float
    ratio: float
    put_mb_per_s: float
    follower_get_msgs_per_s: float
    follower_get_mb_per_s: float
    messages_read: int


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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


async def bench(args: argparse.Namespace, root: pathlib.Path) -> Report:
    peers = {i: f"127.0.0.1:{p}" for i, p in zip(IDS, free_ports(len(IDS)), strict=True)}
    options = StoreOptions(retention_interval_s=0, default_queue_count=QUEUES)
    stores = {}
    for node_id in IDS:
        config = NodeConfig(self_id=node_id, peers=peers, store_dir=root / node_id, group="bench", flush=args.flush)
        stores[node_id] = MessageStore.create(config, options)
        await stores[node_id].start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not any(s.is_master for s in stores.values()):
            if loop.time() > deadline:
                raise RuntimeError("no master elected")
            await asyncio.sleep(0.01)
        master = next(s for s in stores.values() if s.is_master)
        server = master.server
        assert server is not None
        await master.create_topic(TOPIC, QUEUES)
        body = b"x" * args.size
        batch = [Message(TOPIC, body, tags="TagA") for _ in range(args.batch)]
        raw_items = [body] * args.batch

        async def put() -> None:
            result = await master.put_messages(batch)
            if not result.ok:
                raise RuntimeError(f"put failed: {result.status} {result.reason}")

        async def raw() -> None:
            await server.append(raw_items)

        raw_rates, put_rates = [], []
        await _run_for(min(args.seconds, 0.5), args.producers, put)  # warm up both paths
        await _run_for(min(args.seconds, 0.5), args.producers, raw)
        for _ in range(args.rounds):
            start = time.perf_counter()
            calls = await _run_for(args.seconds, args.producers, raw)
            raw_rates.append(calls * args.batch / (time.perf_counter() - start))
            start = time.perf_counter()
            calls = await _run_for(args.seconds, args.producers, put)
            put_rates.append(calls * args.batch / (time.perf_counter() - start))
        raw_rate, put_rate = statistics.median(raw_rates), statistics.median(put_rates)

        follower = next(s for s in stores.values() if s is not master)
        target = master.last_applied()
        deadline = loop.time() + 60
        while follower.last_applied() < target:
            if loop.time() > deadline:
                raise RuntimeError("the follower did not catch up")
            await asyncio.sleep(0.01)
        read = read_bytes = 0
        start = time.perf_counter()
        for queue in range(QUEUES):
            offset = 0
            while True:
                got = await follower.get_messages("bench", TOPIC, queue, offset, max_count=32)
                if got.status is not GetStatus.FOUND:
                    break
                read += len(got.messages)
                read_bytes += sum(len(m.message.body) for m in got.messages)
                offset = got.next_offset
        elapsed = time.perf_counter() - start
        return Report(
            flush=args.flush,
            size=args.size,
            batch=args.batch,
            producers=args.producers,
            rounds=args.rounds,
            raw_msgs_per_s=round(raw_rate),
            put_msgs_per_s=round(put_rate),
            ratio=round(put_rate / raw_rate, 3),
            put_mb_per_s=round(put_rate * args.size / 1e6, 2),
            follower_get_msgs_per_s=round(read / elapsed),
            follower_get_mb_per_s=round(read_bytes / elapsed / 1e6, 2),
            messages_read=read,
        )
    finally:
        for store in stores.values():
            await store.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (for CI smoke runs)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round and side")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--size", type=int, default=1024, help="message body bytes")
    parser.add_argument("--batch", type=int, default=32, help="messages per put / items per raw append")
    parser.add_argument("--producers", type=int, default=8, help="concurrent producer tasks")
    parser.add_argument("--flush", choices=("async", "sync"), default="async")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the report here")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
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
