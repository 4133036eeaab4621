"""`dledger demo --broker --groups N`: a NameServer and N broker groups of 3 replicas through one group's
leader failure, told as a short story, end to end.

Steps: start the NameServer and the groups (each replica registering with it, the leader as master, id 0);
one producer of the official RocketMQ 5 client, connected to `broker-a`, spreads a topic's sends over every
group (QueryRoute names each group's queues with that group's endpoints); SIGKILL `broker-a`'s leader while
two threads keep sending; count the acknowledgements per group around the kill; wait for `broker-a` to
acknowledge again and for the NameServer to name its new master; consume everything through `broker-b`;
stop every process; remove the temporary directory.

Invariants: exit code 0 only when every check held: sends landed on every group; the other groups kept
acknowledging after the kill; `broker-a` acknowledged again; every acknowledged message was consumed.
Every wait has a deadline; every process started is stopped, whatever happens; a failure is one line, exit 1.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from dledger.cli.broker import LocalBrokerGroup
from dledger.cli.broker_groups import LocalBrokerCluster, RegisteringGroup, cluster_info
from dledger.client.client import DLedgerClient
from dledger.client.client_policy import DLedgerError
from dledger.node.config import ConfigError

__all__ = ["run_broker_demo"]

TOPIC = "demo-spread"
FIRST = "CONSUME_FROM_FIRST_OFFSET"  # the consumer starts after the sends
T = TypeVar("T")


def _say(text: str) -> None:
    print(text, flush=True)


def _wait(what: str, probe: Callable[[], T | None], timeout: float, poll: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except Exception:  # a client call during an election: not yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)


def _leader(group: LocalBrokerGroup) -> str | None:
    live = {i: a for i, a in group.peers.items() if group.alive(i)}
    try:
        with DLedgerClient(live, group=group.group) as client:
            leaders = [n.id for n in client.status(timeout=1.0) if n.reachable and n.role == "leader"]
    except DLedgerError:
        return None
    return leaders[0] if len(leaders) == 1 else None


def _master(namesrv: str, broker_name: str, leader: str, group: RegisteringGroup) -> str | None:
    """The address the NameServer names as `broker_name`'s master (broker id 0), once it is `leader`'s."""
    info = cluster_info(namesrv)
    table = info.get("brokerAddrTable") if info else None
    entry = table.get(broker_name) if isinstance(table, dict) else None
    addrs = entry.get("brokerAddrs") if isinstance(entry, dict) else None
    master = addrs.get("0") if isinstance(addrs, dict) else None
    return master if master == group.broker_addr(leader) else None


def _acked_since(acks: _Acks, before: Counter[str], name: str, more: int) -> bool:
    return acks.per_group()[name] >= before[name] + more


class _Acks:
    """Acknowledged sends, in order: (broker name, message id)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, str]] = []

    def add(self, receipt: Any) -> None:
        with self.lock:
            self.items.append((receipt.message_queue.message_queue0().broker.name, receipt.message_id))

    def per_group(self) -> Counter[str]:
        with self.lock:
            return Counter(name for name, _ in self.items)


def _story(c: LocalBrokerCluster, messages: int) -> None:
    from rocketmq import (  # type: ignore[import-untyped]
        ClientConfiguration,
        Credentials,
        FilterExpression,
        Message,
        Producer,
        SimpleConsumer,
    )

    def config(g: LocalBrokerGroup) -> ClientConfiguration:
        return ClientConfiguration(g.access_point, Credentials("", ""), request_timeout=3)

    def message(body: str) -> Message:
        m = Message()
        m.topic, m.body = TOPIC, body.encode()
        return m

    names = [g.group for g in c.groups]
    a, others = c.groups[0], c.groups[1:]
    for g in c.groups:
        leader = _wait(f"{g.group} electing a leader", partial(_leader, g), 60)
        master = _wait(f"{g.group}'s master registered", partial(_master, c.namesrv_addr, g.group, leader, g), 60)
        _say(f"   {g.group}: leader {leader}, registered with the NameServer as master (id 0) at {master}")
    for g in c.groups:  # the topic on every group: created by a first send to each
        p = Producer(config(g))
        p.startup()
        try:
            _wait(f"a first send to {g.group}", partial(p.send, message("hello")), 60, poll=0.2)
        finally:
            p.shutdown()

    acks = _Acks()
    _say(f"2. one producer connected to {a.group} sends {messages} messages to topic {TOPIC!r}")
    p = Producer(config(a), (TOPIC,))
    p.startup()
    try:

        def landed_everywhere() -> bool:  # the route names every group once they registered the topic
            acks.add(p.send(message("probe")))
            return set(acks.per_group()) == set(names)

        _wait("sends landing on every group", landed_everywhere, 120)
        before = acks.per_group()
        for k in range(messages):  # each retried until acknowledged (a loaded host can time a send out)
            acks.add(_wait(f"send m{k} acknowledged", partial(p.send, message(f"m{k}")), 60, poll=0.2))
        spread = acks.per_group() - before
        _say("   acknowledged per group: " + ", ".join(f"{n} {spread[n]}" for n in names))

        victim = _wait(f"{a.group}'s leader", lambda: _leader(a), 30)
        _say(f"3. two threads keep sending; SIGKILL {a.group}'s leader {victim}")
        stop = threading.Event()

        def produce(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    acks.add(p.send(message(f"w{worker}-{n}")))
                except Exception:
                    continue  # not acknowledged: the demo promises nothing about it

        threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # a second of sends before the kill
            at_kill, killed_at = acks.per_group(), time.monotonic()
            a.kill(victim)
            _wait(f"{a.group} acknowledging again", lambda: acks.per_group()[a.group] > at_kill[a.group], 120, 0.01)
            back, during = time.monotonic() - killed_at, acks.per_group()
            for g in others:
                _wait(f"{g.group} acknowledging after the kill", partial(_acked_since, acks, at_kill, g.group, 10), 120)
            new = _wait(f"{a.group}'s new leader", partial(_leader, a), 30)
            master = _wait(
                "the NameServer naming the new master", partial(_master, c.namesrv_addr, a.group, new, a), 60
            )
            time.sleep(1.0)  # a second of sends after the failover
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        after = acks.per_group()
        kept = ", ".join(f"{g.group} {during[g.group] - at_kill[g.group]}" for g in others)
        _say(f"   {a.group} acknowledged again {back:.2f} s after the kill; meanwhile the others acknowledged: {kept}")
        _say(f"   {a.group} failed over to {new}; the NameServer names it master at {master}")
        _say("   acknowledged since the kill: " + ", ".join(f"{n} {after[n] - at_kill[n]}" for n in names))
    finally:
        p.shutdown()

    ids = {message_id for _, message_id in acks.items}
    reader = others[0]
    _say(f"4. one consumer connected to {reader.group} receives every acknowledged message ({len(ids)})")
    consumer = SimpleConsumer(config(reader), "demo-readers", {TOPIC: FilterExpression("*")}, await_duration=1)
    consumer.startup()
    try:
        got: set[str] = set()
        deadline = time.monotonic() + 180
        while not ids <= got:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(ids - got)} of {len(ids)} acknowledged messages were not received")
            try:
                batch = consumer.receive(32, 20)
            except Exception:
                continue
            for m in batch:
                got.add(m.message_id)
                try:
                    consumer.ack(m)
                except Exception:
                    pass  # received; redelivered later
    finally:
        consumer.shutdown()
    group_of = {mid: n for n, mid in acks.items}
    received = Counter(group_of[mid] for mid in got if mid in group_of)
    _say("   received per group: " + ", ".join(f"{n} {received[n]}" for n in names) + "; none lost")


def run_broker_demo(groups: int = 2, messages: int = 100, keep: str | None = None) -> int:
    """The demo; 0 when every check held, 1 otherwise. `keep`: run in this directory and keep it."""
    try:
        import rocketmq  # noqa: F401
    except ImportError:
        _say("dledger demo --broker: needs the official RocketMQ client: pip install 'dledger[rocketmq]'")
        return 2
    root = pathlib.Path(keep) if keep else pathlib.Path(tempfile.mkdtemp(prefix="dledger-demo-groups-"))
    # registration every second (default 30 s): the NameServer learns the demo's topic on both groups at once
    try:
        c = LocalBrokerCluster.create(root, groups, period_ms=1000, extra={"consumeFromWhere": FIRST})
    except (OSError, ConfigError) as exc:
        print(f"dledger demo --broker: {root}: {exc}", file=sys.stderr)
        return 2
    try:
        _say(f"1. starting a NameServer ({c.namesrv_addr}) and {groups} broker groups of 3 replicas in {root}")
        failed = c.start_all()
        if failed:
            raise TimeoutError("; ".join(f"{n} {why}" for n, why in failed.items()))
        _story(c, messages)
        _say("5. stopping every process")
        c.stop_all()
        _say(f"done: {groups} groups, one leader killed, the others never stopped, no acknowledged message lost")
        return 0
    except Exception as exc:  # a failed check, a wait that ran out, or the client's own error: one line
        why = str(exc) if isinstance(exc, (TimeoutError, AssertionError, OSError)) else f"{type(exc).__name__}: {exc}"
        _say(f"demo failed: {why} (logs in {root}{'' if keep else ', removed on exit: use --keep DIR'})")
        return 1
    finally:
        c.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
