"""Helpers for the endpoint tests: a local broker group of real processes and the official Python client.

Every wait has a deadline and polls a condition; nothing sleeps for a fixed time to "let things settle".
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer
from rocketmq.grpc_protocol import TransactionResolution
from rocketmq.v5.producer import TransactionChecker

from dledger.cli.broker import LocalBrokerGroup
from dledger.client.client import DLedgerClient
from tests.support import wait_for

T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.05) -> T:
    """`wait_for` where the probe's exceptions count as "not yet" (a client call during an election)."""
    return wait_for(probe, timeout, what, poll=interval, retry_on=(Exception,))


class Target(Protocol):
    """Where a client connects: a whole group, or one replica of it (`Pinned`)."""

    @property
    def access_point(self) -> str: ...


@dataclass(frozen=True)
class Pinned:
    """One replica's endpoint; `role` ("leader" or "follower") names it in topics and groups."""

    access_point: str
    role: str


def running_group(root: pathlib.Path, extra: dict[str, str], *, by_name: bool = False) -> Iterator[LocalBrokerGroup]:
    """A started 3-replica group that has taken one message (so it has elected and serves) and whose every
    replica listens, stopped after.

    `by_name`: the endpoints are `localhost:PORT`, so a route names only the replica that answered it (the
    clients take one address for a DNS name) and a client given one replica stays on it."""
    g = LocalBrokerGroup.create(root, extra=extra)
    if by_name:
        g.endpoints = {k: "localhost:" + v.rpartition(":")[2] for k, v in g.endpoints.items()}
    g.start_all()
    try:
        # the clients take one address for a DNS name: by name, the group is warmed up through one replica
        first: Target = Pinned(next(iter(g.endpoints.values())), "any") if by_name else g
        with producer(first) as p:
            send_eventually(p, message("warmup", b"w"))
        for endpoint in g.endpoints.values():  # every replica listens (a test may call one directly)
            with grpc.insecure_channel(endpoint) as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
        yield g
    finally:
        g.stop_all()


def config(group: Target, ak: str = "", sk: str = "", request_timeout: int = 3) -> ClientConfiguration:
    return ClientConfiguration(group.access_point, Credentials(ak, sk), request_timeout=request_timeout)


def message(topic: str, body: bytes, **fields: Any) -> Message:
    msg = Message()
    msg.topic = topic
    msg.body = body
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@contextmanager
def producer(group: Target, topics: tuple[str, ...] = (), **kw: Any) -> Iterator[Producer]:
    p = Producer(config(group, kw.pop("ak", ""), kw.pop("sk", "")), topics, **kw)
    p.startup()
    try:
        yield p
    finally:
        p.shutdown()


@contextmanager
def simple_consumer(
    group: Target, consumer_group: str, topic: str, tags: str = "*", await_s: int = 1, **kw: Any
) -> Iterator[SimpleConsumer]:
    c = SimpleConsumer(
        config(group, kw.pop("ak", ""), kw.pop("sk", "")),
        consumer_group,
        {topic: FilterExpression(tags)},
        await_duration=await_s,
    )
    c.startup()
    try:
        yield c
    finally:
        c.shutdown()


def send_eventually(p: Producer, msg: Message, timeout: float = 60.0) -> Any:
    """Send, retrying while the group elects its first leader (the client retries 3 times by itself)."""
    return eventually("a send to succeed", lambda: p.send(msg), timeout, interval=0.2)


def receive(c: SimpleConsumer, n: int, invisible_s: int, timeout: float = 30.0) -> list[Any]:
    """`c.receive(n, invisible_s)`, tried again while it raises (a leader change is a retriable error)."""
    return eventually("a receive that does not fail", lambda: (c.receive(n, invisible_s),), timeout)[0]


def leader_id(group: LocalBrokerGroup, timeout: float = 30.0) -> str:
    live = {i: a for i, a in group.peers.items() if group.alive(i)}

    def probe() -> str | None:
        with DLedgerClient(live, group=group.group) as client:
            leaders = [n.id for n in client.status(timeout=1.0) if n.reachable and n.role == "leader"]
        return leaders[0] if leaders else None

    return eventually("a leader", probe, timeout, interval=0.1)


def drain(c: SimpleConsumer, want: set[str], timeout: float = 60.0, invisible_s: int = 20) -> dict[str, Any]:
    """Receive and ack until every message id in `want` was received; returns id -> message."""
    got: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while not want <= set(got):
        assert time.monotonic() < deadline, f"missing {len(want - set(got))} of {len(want)} messages"
        try:
            batch = c.receive(32, invisible_s)
        except Exception:
            continue
        for m in batch:
            got.setdefault(m.message_id, m)
            try:
                c.ack(m)
            except Exception:
                pass  # redelivered later; still counted as received
    return got


class OrphanChecker(TransactionChecker):
    """Commits the message whose body is b"orphan"; for the others, "don't know yet" (they stay prepared)."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, message: object) -> TransactionResolution:
        self.checked.append(message.message_id)  # type: ignore[attr-defined]
        if message.body == b"orphan":  # type: ignore[attr-defined]
            return TransactionResolution.COMMIT
        return TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED
