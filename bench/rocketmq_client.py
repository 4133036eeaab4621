"""Benchmark: the official RocketMQ Python client against a 3-replica `dledger broker` group.

Run with `python -m bench.rocketmq_client [--messages N] [--size BYTES] [--window W] [--consumers C]
[--json PATH] [--dir DIR]`.

A local group of three `dledger broker` processes (loopback, async flush) serves `MessagingService`. Then:
- send: one official `Producer` sends `--messages` bodies of `--size` bytes with `send_async`, keeping at
  most `--window` sends in flight; the rate counts sends acknowledged (committed on a quorum) per second;
- receive: `--consumers` official `SimpleConsumer`s (one thread each, one consumer group) `receive(32, 30)`
  and `ack` every message until all were received; the rate counts messages received and acknowledged.

The client's own limits, which bound these figures (not the broker): the Python client sends one message per
SendMessage RPC (no batching), runs every RPC on one asyncio I/O thread under the GIL, receives at most 32
messages per ReceiveMessage, and acknowledges one message per AckMessage RPC (each ack is a replicated write).
Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

from dledger.cli.broker import LocalBrokerGroup

TOPIC = "BenchClient"
GROUP = "bench-group"


def _message(body: bytes) -> Message:
    msg = Message()
    msg.topic = TOPIC
    msg.body = body
    return msg


def _ready(producer: Producer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            producer.send(_message(b"warm-up"))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def send_phase(config: ClientConfiguration, messages: int, size: int, window: int) -> dict[str, Any]:
    producer = Producer(config, (TOPIC,))
    producer.startup()
    try:
        _ready(producer)
        body = b"x" * size
        inflight: deque[Future[Any]] = deque()
        failed = 0
        start = time.perf_counter()
        for _ in range(messages):
            if len(inflight) >= window:
                try:
                    inflight.popleft().result(60)
                except Exception:
                    failed += 1
            inflight.append(producer.send_async(_message(body)))
        for fut in inflight:
            try:
                fut.result(60)
            except Exception:
                failed += 1
        elapsed = time.perf_counter() - start
    finally:
        producer.shutdown()
    ok = messages - failed
    return {"sent": ok, "failed": failed, "seconds": round(elapsed, 2), "msgs_per_s": round(ok / elapsed, 1)}


def receive_phase(config: ClientConfiguration, expected: int, consumers: int) -> dict[str, Any]:
    got: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()
    subscription = {TOPIC: FilterExpression("*")}
    clients = [SimpleConsumer(config, GROUP, subscription, await_duration=2) for _ in range(consumers)]
    for c in clients:
        c.startup()

    def run(c: SimpleConsumer) -> None:
        while not done.is_set():
            try:
                batch = c.receive(32, 30)
            except Exception:
                continue
            for m in batch:
                try:
                    c.ack(m)
                except Exception:
                    continue
                with lock:
                    got.add(m.message_id)
                    if len(got) >= expected:
                        done.set()

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    done.wait(600)
    elapsed = time.perf_counter() - start
    done.set()
    for t in threads:
        t.join(40)
    for c in clients:
        c.shutdown()
    return {"received": len(got), "seconds": round(elapsed, 2), "msgs_per_s": round(len(got) / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--window", type=int, default=256, help="async sends in flight")
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--dir", help="where the replicas keep their stores (default: a temporary directory)")
    args = ap.parse_args()
    root = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="bench-rmq-"))
    group = LocalBrokerGroup.create(root, extra={"consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET"})  # send, then read
    group.start_all()
    try:
        config = ClientConfiguration(group.access_point, Credentials(), request_timeout=10)
        sent = send_phase(config, args.messages, args.size, args.window)
        print(f"send (1 producer, send_async, window {args.window}, {args.size} B): {sent}", flush=True)
        received = receive_phase(config, sent["sent"] + 1, args.consumers)  # + the warm-up message
        print(f"receive + ack ({args.consumers} SimpleConsumers, batch 32): {received}", flush=True)
    finally:
        group.stop_all()
    if args.json:
        results = {"args": vars(args), "send": sent, "receive": received}
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
