"""The broker workload's clients, run as separate OS processes: `python -m jepsen_like.broker_workload ...`.

They use the official RocketMQ 5 Python client (`rocketmq-python-client`) against the replicas' endpoints.
Each process runs `threads` workers; worker `w` of client `k` is a producer when `k * threads + w` is even,
else a consumer (so producers and consumers alternate over the whole run). Every operation goes to the
history (`history.py`):
- send (producer): body and key `<client>.<worker>-<seq>` (unique), tag `jl`, to topic `TOPIC` (the broker
  spreads it over its queues). `ok` with the message id and queue offset of the receipt; `fail` only when
  the broker answered a code that promises nothing was written (`DEFINITE_FAILURES`); `info` for anything
  else (a timeout, a lost connection, a persistence timeout, an unexpected error), after which the worker
  continues under a new process name. The client's own resend (3 attempts, the same message id) is switched
  off for this producer, so one history operation is one SendMessage request and one message;
- receive (consumer, `SimpleConsumer` in group `GROUP`): `receive(BATCH, INVISIBLE_S)`; `ok` with the
  messages `[body, message id, queue, offset, delivery attempt]` (queue and offset come from the receipt
  handle, `topic:queue:offset:seq`), an empty list when there was nothing; `info` on an error (a pop may
  have taken effect: those messages come back after `INVISIBLE_S`);
- ack: one per received message, value the body, `ok` / `fail` (a definite refusal, such as a stale
  receipt handle) / `info`, with the queue and offset;
- drain: when the stop file appears, producers stop; each consumer records a `drain` invoke and keeps
  receiving until no message came for `QUIET_S` (longer than the invisible time: nothing unacknowledged is
  left hidden) or the drain deadline passed, then records `drain` ok with `{"quiet": bool}`.
Invariants: a worker has one operation in flight; a completion is written before the next invoke; the
sequence of bodies of a producer depends only on its name.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from jepsen_like.history import HistoryWriter

__all__ = ["DEFINITE_FAILURES", "GROUP", "TOPIC", "classify", "main", "status_code"]

TOPIC = "jl-topic"
GROUP = "jl-group"
TAG = "jl"
BATCH = 16
INVISIBLE_S = 5
QUIET_S = INVISIBLE_S + 3.0
AWAIT_S = 1  # long polling of a receive
REQUEST_TIMEOUT_S = 5

# RocketMQ 5 codes after which the broker promises the message was not written: every 4xx answer but a request
# timeout, and HA_NOT_AVAILABLE (dledger's codes.py: "nothing was written, try again"). Everything else is info.
_HA_NOT_AVAILABLE = 50002
_REQUEST_TIMEOUT = 40800
DEFINITE_FAILURES = frozenset(
    {c for c in range(40000, 50000) if c != _REQUEST_TIMEOUT} | {_HA_NOT_AVAILABLE}
)  # fmt: skip


def status_code(exc: BaseException) -> int | None:
    """The RocketMQ status code a client exception carries (None for a gRPC or any other error)."""
    code = getattr(exc, "code", None)  # a property of ClientException; a method of grpc's AioRpcError
    return code if isinstance(code, int) else None


def classify(exc: BaseException) -> str:
    """`fail` if the answer promises nothing took effect, else `info` (the outcome is unknown)."""
    return "fail" if status_code(exc) in DEFINITE_FAILURES else "info"


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _position(handle: str | None) -> tuple[int | None, int | None]:
    """(queue, offset) from a dledger receipt handle `topic:queue:offset:seq`."""
    parts = (handle or "").rsplit(":", 3)
    if len(parts) != 4:
        return None, None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None, None


def _no_resend(producer: Any) -> None:
    """Switch off the official producer's resend: it would send the same message (same id) again after a
    timeout, so one history operation could store two messages. (The check is a private method; the
    producer calls it through `self`, so an instance attribute takes its place.)"""

    def give_up(message: Any, topic_queue: Any, attempt: int, exc: BaseException) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_exception(exc)
        return f

    producer._Producer__check_send_retry_condition = give_up


class _Worker:
    def __init__(self, name: str, config: Any, history: HistoryWriter, stop: threading.Event) -> None:
        self.name, self.config, self.history, self.stop = name, config, history, stop
        self.generation = 0

    @property
    def process(self) -> str:
        return f"{self.name}.{self.generation}"

    def outcome(self, process: str, f: str, value: Any, exc: BaseException, **extra: Any) -> None:
        kind = classify(exc)
        self.history.write(process, kind, f, value, error=_err(exc), code=status_code(exc), **extra)
        if kind == "info":
            self.generation += 1


class Producer(_Worker):
    def run(self, deadline: float) -> None:
        from rocketmq import Message, Producer  # type: ignore[import-untyped]

        client = _start(lambda: Producer(self.config, (TOPIC,)), deadline, self.stop)
        if client is None:
            return
        _no_resend(client)
        seq = 0
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                seq += 1
                value = f"{self.name}-{seq}"
                msg = Message()
                msg.topic, msg.body, msg.tag, msg.keys = TOPIC, value.encode(), TAG, value
                process = self.process
                self.history.write(process, "invoke", "send", value)
                try:
                    receipt = client.send(msg)
                except Exception as exc:
                    self.outcome(process, "send", value, exc)
                    self.stop.wait(0.05)
                else:
                    self.history.write(process, "ok", "send", value, msg_id=receipt.message_id,
                                       offset=int(receipt.offset))  # fmt: skip
        finally:
            _shutdown(client)


class Consumer(_Worker):
    def __init__(self, *args: Any, drain_s: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.drain_s = drain_s

    def run(self, deadline: float) -> None:
        from rocketmq import FilterExpression, SimpleConsumer

        def make() -> Any:
            return SimpleConsumer(self.config, GROUP, {TOPIC: FilterExpression("*")}, await_duration=AWAIT_S)

        client = _start(make, deadline, self.stop)
        if client is None:
            return
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.receive(client)
            drain = "drain-" + self.name  # its own process: the drain op spans receives
            self.history.write(drain, "invoke", "drain", None)
            until = min(deadline + self.drain_s, time.monotonic() + self.drain_s)
            last_message = time.monotonic()
            while time.monotonic() < until and time.monotonic() - last_message < QUIET_S:
                if self.receive(client):
                    last_message = time.monotonic()
            quiet = time.monotonic() - last_message >= QUIET_S
            self.history.write(drain, "ok", "drain", None, quiet=quiet)
        finally:
            _shutdown(client)

    def receive(self, client: Any) -> int:
        """One receive and the acks of what it brought; how many messages came (0 after an error too)."""
        process = self.process
        self.history.write(process, "invoke", "receive", None)
        try:
            batch = client.receive(BATCH, INVISIBLE_S)
        except Exception as exc:
            self.outcome(process, "receive", None, exc)
            time.sleep(0.1)
            return 0
        rows = []
        for m in batch:
            queue, offset = _position(m.receipt_handle)
            body = bytes(m.body or b"").decode("utf-8", "backslashreplace")
            rows.append([body, m.message_id, queue, offset, m.delivery_attempt])
        self.history.write(process, "ok", "receive", None, messages=rows)
        for m, row in zip(batch, rows, strict=True):
            process = self.process
            self.history.write(process, "invoke", "ack", row[0])
            try:
                client.ack(m)
            except Exception as exc:
                self.outcome(process, "ack", row[0], exc, queue=row[2], offset=row[3])
            else:
                self.history.write(process, "ok", "ack", row[0], queue=row[2], offset=row[3])
        return len(batch)


def _guarded(worker: Producer | Consumer, deadline: float) -> None:
    """Run a worker; a crash is printed (to the client's .err file), its open operation reads as `info`."""
    try:
        worker.run(deadline)
    except BaseException:
        traceback.print_exc()
        raise


def _start(make: Any, deadline: float, stop: threading.Event) -> Any:
    """Start an official client, trying again while the group has no leader yet (startup queries the route)."""
    while not stop.is_set() and time.monotonic() < deadline:
        client = make()
        try:
            client.startup()
            return client
        except Exception:
            stop.wait(0.5)
    return None


def _shutdown(client: Any) -> None:
    try:
        client.shutdown()
    except Exception:
        pass  # a client that lost its broker may fail to say goodbye


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepsen_like.broker_workload")
    p.add_argument("--endpoints", required=True, help="n0-host:port;n1-host:port;... (the replicas' endpoints)")
    p.add_argument("--client", required=True, help="this process's name, c<k>")
    p.add_argument("--index", type=int, required=True, help="k")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--drain", type=float, default=60.0, help="seconds a consumer may drain after the stop file")
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", default="")
    args = p.parse_args(argv)
    os.environ.setdefault("HOME", "/tmp")  # the client logs to ~/logs/rocketmq_python
    logging.getLogger("rocketmq").setLevel(logging.CRITICAL)
    from rocketmq import ClientConfiguration, Credentials

    from dledger.node.config import parse_peers

    # every replica, as the endpoint's docs advise: the client's one channel takes the lowest address (it sorts
    # them) and fails over to another when that replica is unreachable; a follower forwards writes to the leader
    access_point = ";".join(parse_peers(args.endpoints).values())
    config = ClientConfiguration(access_point, Credentials(), request_timeout=REQUEST_TIMEOUT_S)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    history = HistoryWriter(args.out)
    deadline = time.monotonic() + args.duration
    workers: list[Producer | Consumer] = []
    for w in range(args.threads):
        name = f"{args.client}.{w}"
        if (args.index * args.threads + w) % 2 == 0:
            workers.append(Producer(name, config, history, stop))
        else:
            workers.append(Consumer(name, config, history, stop, drain_s=args.drain))
    threads = [threading.Thread(target=_guarded, args=(w, deadline), name=w.name) for w in workers]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            if args.stop_file and os.path.exists(args.stop_file):
                stop.set()
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
        history.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
