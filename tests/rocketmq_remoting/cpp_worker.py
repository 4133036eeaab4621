"""A process that drives the official C++ client (rocketmq-python-cvs) for the remoting tests.

It runs in its own process because rocketmq-client-cpp 2.1.0's PushConsumer can crash the process on
shutdown (apache/rocketmq-client-cpp#335): the test kills it instead. Every result is one JSON line on
stdout, flushed at once:

    produce: {"i": n, "body": ..., "status": "OK", "msg_id": ..., "offset": n} or {"i": n, "error": ...}
    consume: {"topic", "body", "id", "tags", "keys", "props", "reconsume", "queue", "offset", "attempt"}

Usage: python -m tests.rocketmq_remoting.cpp_worker produce|consume --namesrv ADDR ... (see `main`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from rocketmq import client  # type: ignore[import-untyped]
from rocketmq.ffi import MSG_CALLBACK_FUNC, dll  # type: ignore[import-untyped]

_out = threading.Lock()


def emit(record: dict[str, Any]) -> None:
    with _out:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def message(topic: str, body: str, args: argparse.Namespace, i: int) -> Any:
    msg = client.Message(topic)
    msg.set_body(body.encode())
    if args.tags:
        msg.set_tags(args.tags.split(",")[i % len(args.tags.split(","))])
    msg.set_keys(f"key-{body[:40]}")
    msg.set_property("seq", str(i))
    if args.delay_level:
        msg.set_delay_time_level(args.delay_level)
    return msg


class CallbackRefs:
    """Stands in for rocketmq-python-cvs's `Producer._callback_refs` list, which keeps the ctypes callbacks
    of sends alive. The library appends a send_async's success and exception callbacks together and, when
    one of them runs, removes only that one with `list.remove`: the other stays forever, so every send
    scans all earlier sends (with the GIL held) and a producer's cost per send grows with the sends it made.
    Here two callbacks appended one after the other form a pair that the first `remove` of either drops
    (a send's outcome is either callback, never both), by identity, at constant cost; a lone callback
    (send_orderly's queue selector, appended and removed around one call) is kept until removed."""

    def __init__(self) -> None:
        self._refs: dict[int, tuple[Any, ...]] = {}
        self._last: Any = None

    def append(self, ref: Any) -> None:
        if self._last is None:
            self._last = ref
            self._refs[id(ref)] = (ref,)
        else:
            pair = (self._last, ref)
            self._refs[id(self._last)] = self._refs[id(ref)] = pair
            self._last = None

    def remove(self, ref: Any) -> None:
        if ref is self._last:
            self._last = None
        for kept in self._refs.pop(id(ref), ()):
            self._refs.pop(id(kept), None)

    def __len__(self) -> int:
        return len(self._refs)


def produce(args: argparse.Namespace) -> None:
    p = client.Producer(args.group, timeout=args.timeout_ms)
    p._callback_refs = CallbackRefs()
    p.set_namesrv_addr(args.namesrv)
    if args.ak:
        p.set_session_credentials(args.ak, args.sk, "ALIYUN")
    p.start()
    emit({"started": True})
    if args.mode == "async":
        produce_async(p, args)
    i = 0
    while args.count < 0 or i < args.count:
        body = f"{args.prefix}-{i}" + "x" * args.pad
        t0 = time.time()
        try:
            if args.mode == "batch":
                msgs = [message(args.topic, f"{body}-{k}", args, i) for k in range(args.batch)]
                result = p.send_batch(msgs)
            elif args.mode == "oneway":
                p.send_oneway(message(args.topic, body, args, i))
                result = None
            elif args.mode == "orderly":
                result = p.send_orderly(message(args.topic, body, args, i), i % 3)
            else:
                result = p.send_sync(message(args.topic, body, args, i))
            if result is None:
                emit({"i": i, "body": body, "status": "SENT"})
            else:
                emit(
                    {
                        "i": i,
                        "body": body,
                        "status": result.status.name,
                        "msg_id": result.msg_id,
                        "offset": result.offset,
                        "t0": t0,
                        "t": time.time(),
                    }
                )
        except Exception as exc:
            emit({"i": i, "body": body, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
            time.sleep(args.error_pause)
        i += 1
        if args.interval:
            time.sleep(args.interval)
    if args.mode == "oneway":  # a sync send after them on the same connection: the oneway ones left first
        result = p.send_sync(message(args.topic, f"{args.prefix}-end", args, 0))
        emit({"i": i, "body": f"{args.prefix}-end", "status": result.status.name, "msg_id": result.msg_id})
    emit({"done": True})
    os._exit(0)


def produce_async(p: Any, args: argparse.Namespace) -> None:
    """send_async with at most `--inflight` sends outstanding; each acknowledgement is one record."""
    slots = threading.Semaphore(args.inflight)
    i = 0
    while args.count < 0 or i < args.count:
        body = f"{args.prefix}-{i}" + "x" * args.pad
        t0 = time.time()
        slots.acquire()

        def ok(result: Any, i: int = i, body: str = body, t0: float = t0) -> None:
            emit(
                {
                    "i": i,
                    "body": body,
                    "status": result.status.name,
                    "msg_id": result.msg_id,
                    "t0": t0,
                    "t": time.time(),
                }
            )
            slots.release()

        def failed(exc: Any, i: int = i, body: str = body) -> None:
            emit({"i": i, "body": body, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
            slots.release()

        p.send_async(message(args.topic, body, args, i), ok, failed)
        i += 1
    for _ in range(args.inflight):
        slots.acquire()
    emit({"done": True, "callback_refs": len(p._callback_refs)})
    os._exit(0)


def consume(args: argparse.Namespace) -> None:
    model = client.MessageModel.BROADCASTING if args.broadcast else client.MessageModel.CLUSTERING
    c = client.PushConsumer(args.group, orderly=args.orderly, message_model=model)
    c.set_namesrv_addr(args.namesrv)
    if args.ak:
        c.set_session_credentials(args.ak, args.sk, "ALIYUN")
    if args.instance:
        c.set_instance_name(args.instance)
    attempts: dict[str, int] = {}

    def on_message(consumer: Any, handle: Any) -> int:
        try:
            m = client.RecvMessage(handle)
            body = m.body.decode()
            attempts[body] = attempts.get(body, 0) + 1
            emit({
                "topic": m.topic, "body": body, "id": m.id, "tags": m.tags.decode(), "keys": m.keys.decode(),
                "seq": (m.get_property("seq") or b"").decode(), "reconsume": m.reconsume_times, "queue": m.queue_id,
                "offset": m.queue_offset, "attempt": attempts[body], "t": time.time(),
            })  # fmt: skip
            return 1 if args.fail_all else 0
        except Exception as exc:
            emit({"callback_error": repr(exc)})
            return 1

    func = MSG_CALLBACK_FUNC(on_message)
    dll.Subscribe(c._handle, args.topic.encode(), args.expr.encode())
    (dll.RegisterMessageCallbackOrderly if args.orderly else dll.RegisterMessageCallback)(c._handle, func)
    c.start()
    emit({"started": True})
    while True:
        time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["produce", "consume"])
    ap.add_argument("--namesrv", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--prefix", default="m")
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--tags", default="")
    ap.add_argument("--mode", default="sync", choices=["sync", "async", "oneway", "orderly", "batch"])
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--delay-level", type=int, default=0)
    ap.add_argument("--timeout-ms", type=int, default=5000)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--error-pause", type=float, default=0.2)
    ap.add_argument("--expr", default="*")
    ap.add_argument("--fail-all", action="store_true")
    ap.add_argument("--orderly", action="store_true")
    ap.add_argument("--broadcast", action="store_true")
    ap.add_argument("--instance", default="")
    ap.add_argument("--ak", default="")
    ap.add_argument("--sk", default="")
    args = ap.parse_args()
    (produce if args.role == "produce" else consume)(args)


if __name__ == "__main__":
    main()
