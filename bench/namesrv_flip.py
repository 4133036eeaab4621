"""Route flip: how soon a NameServer's route names a broker group's new leader as broker id 0.

`python -m bench.namesrv_flip [--kills 10] [--period-ms 30000] [--json PATH]` starts a `dledger namesrv`
process and a 3-replica `dledger broker` group registering with it, then, `--kills` times: waits for the
route to name all three replicas with the leader as id 0, SIGKILLs the leader, and polls
GET_ROUTEINFO_BY_TOPIC (every 10 ms) until id 0 is another replica. It reports, per kill and as medians:
- `kill_to_flip`: the SIGKILL to the flipped route (the election included);
- `election_to_flip`: the new leader's "is leader" log line to the flipped route (the registrar's part).
Then it SIGKILLs the NameServer, starts a fresh one on the same port and reports how long until every
replica is registered again (bounded by the registration period). The process helpers here are also used by
tests/rocketmq/test_namesrv_process.py. Timing goals live here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dledger.cli.broker_groups import RegisteringGroup
from dledger.rocketmq.remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode, fastjson, invoke
from dledger.testing.launcher import free_ports

T = TypeVar("T")
TOPIC = "TBW102"  # registered by every replica while autoCreateTopicEnable is on (the default)


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class NamesrvProcess:
    """A `dledger namesrv` process on a fixed port: `start()`, `kill()`, `stop()`."""

    def __init__(self, root: pathlib.Path, port: int | None = None) -> None:
        self.root = root
        self.port = port if port is not None else free_ports(1)[0]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "namesrv.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dledger", "namesrv", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        eventually(
            "the name server to answer", lambda: self.alive() and cluster_info(self.address) is not None, timeout
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> int | None:
        self.kill(signal.SIGTERM)
        return None if self.proc is None else self.proc.returncode


def _call(address: str, code: int, fields: dict[str, str] | None = None) -> RemotingCommand | None:
    try:
        return asyncio.run(invoke(address, RemotingCommand.request(code, fields), timeout=2.0))
    except RemotingError:
        return None


def cluster_info(address: str) -> dict[str, Any] | None:
    r = _call(address, RequestCode.GET_BROKER_CLUSTER_INFO)
    return fastjson.loads(r.body) if r is not None and r.code == ResponseCode.SUCCESS else None


def route_addrs(address: str, topic: str = TOPIC, broker_name: str = "g1") -> dict[int, str]:
    """broker id -> address in the route of `topic` for `broker_name` ({} when none)."""
    r = _call(address, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic})
    if r is None or r.code != ResponseCode.SUCCESS:
        return {}
    route = fastjson.loads(r.body)
    for data in route.get("brokerDatas", []):
        if data.get("brokerName") == broker_name:
            return {int(k): v for k, v in data.get("brokerAddrs", {}).items()}
    return {}


_LEADER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .* node (\S+) is leader in term (\d+)")


def leader_since(group: RegisteringGroup, node_id: str) -> float | None:
    """Wall-clock time of the node's last "is leader" log line."""
    try:
        text = (group.root / f"{node_id}.log").read_text(errors="replace")
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        m = _LEADER_LINE.match(line)
        if m and m.group(3) == node_id:
            found = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
    return found


def full_route(group: RegisteringGroup, namesrv: str) -> dict[int, str] | None:
    """The route once it names every live replica, with id 0 a live one."""
    addrs = route_addrs(namesrv)
    live = {group.broker_addr(n) for n in group.peers if group.alive(n)}
    return addrs if addrs and set(addrs.values()) == live and addrs.get(0) in live else None


@dataclass
class Flip:
    old: str
    new: str
    kill_to_flip: float
    election_to_flip: float | None


def kill_leader_and_time_flip(group: RegisteringGroup, namesrv: str, timeout: float = 60.0) -> Flip:
    """SIGKILL the replica the route names as id 0; time until id 0 is another replica."""
    addrs = eventually("a full route", lambda: full_route(group, namesrv), timeout)
    old = group.node_of(addrs[0])
    t0 = time.monotonic()
    group.kill(old)

    def flipped() -> str | None:
        a = route_addrs(namesrv).get(0)
        return a if a is not None and a != group.broker_addr(old) else None

    new_addr = eventually("the route to name a new leader", flipped, timeout, interval=0.01)
    now_wall, kill_to_flip = time.time(), time.monotonic() - t0
    new = group.node_of(new_addr)
    since = leader_since(group, new)
    return Flip(old, new, kill_to_flip, None if since is None else now_wall - since)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.namesrv_flip", description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--period-ms", type=int, default=30_000, help="registerNameServerPeriod (ms)")
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)
    root = pathlib.Path(tempfile.mkdtemp(prefix="namesrv-flip-"))
    ns = NamesrvProcess(root / "namesrv")
    group = RegisteringGroup.with_namesrv(root / "group", ns.address, period_ms=args.period_ms)
    flips: list[Flip] = []
    try:
        ns.start()
        group.start_all()
        for k in range(args.kills):
            f = kill_leader_and_time_flip(group, ns.address)
            flips.append(f)
            e2f = "?" if f.election_to_flip is None else f"{f.election_to_flip * 1000:.0f} ms"
            print(
                f"kill {k + 1}: {f.old} -> {f.new}: kill to flip {f.kill_to_flip * 1000:.0f} ms, election to flip {e2f}"
            )
            group.start(f.old)
        eventually("a full route", lambda: full_route(group, ns.address))
        ns.kill()
        t0 = time.monotonic()
        ns.start()
        eventually("every replica registered again", lambda: full_route(group, ns.address), args.period_ms / 1000 + 60)
        reregistered = time.monotonic() - t0
        print(
            f"name server SIGKILLed and restarted: every replica registered again {reregistered * 1000:.0f} ms"
            f" after the restart began (period {args.period_ms} ms)"
        )
    finally:
        group.stop_all()
        ns.stop()
        shutil.rmtree(root, ignore_errors=True)
    k2f = statistics.median(f.kill_to_flip for f in flips)
    e2fs = [f.election_to_flip for f in flips if f.election_to_flip is not None]
    e2f = statistics.median(e2fs) if e2fs else None
    print(
        f"median of {len(flips)}: kill to flip {k2f * 1000:.0f} ms"
        + ("" if e2f is None else f", election to flip {e2f * 1000:.0f} ms")
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "kills": [f.__dict__ for f in flips],
                    "median_kill_to_flip_s": k2f,
                    "median_election_to_flip_s": e2f,
                    "namesrv_restart_to_registered_s": reregistered,
                    "period_ms": args.period_ms,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
