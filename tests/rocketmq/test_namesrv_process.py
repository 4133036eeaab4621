"""A `dledger namesrv` process (two, where it matters) and a 3-replica `dledger broker` group registering with
it: the route names the leader as broker id 0, follows SIGKILLs of the leader, comes back after a
NameServer is killed and restarted (the second one answering meanwhile), and malformed frames never take
one down. Bounds here are generous on purpose (a loaded 2-core machine); bench/namesrv_flip.py measures the
times."""

from __future__ import annotations

import pathlib
import random
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from bench.namesrv_flip import (
    NamesrvProcess,
    cluster_info,
    eventually,
    full_route,
    kill_leader_and_time_flip,
)
from dledger.cli.broker_groups import RegisteringGroup
from tests.rocketmq_v5.util import leader_id

pytestmark = pytest.mark.process  # starts processes

pytest.importorskip("rocketmq")

PERIOD_MS = 30_000  # the default: re-registration after a NameServer restart must not wait for it


def leader_is_master(ns: NamesrvProcess, group: RegisteringGroup) -> dict[int, str] | None:
    """The full route, once its id 0 is the replica the group itself reports as leader."""
    addrs = full_route(group, ns.address)
    return addrs if addrs and addrs[0] == group.broker_addr(leader_id(group)) else None


@pytest.fixture
def setup(tmp_path: pathlib.Path) -> Iterator[tuple[NamesrvProcess, NamesrvProcess, RegisteringGroup]]:
    ns, other = NamesrvProcess(tmp_path / "namesrv"), NamesrvProcess(tmp_path / "namesrv2")
    both = f"{ns.address};{other.address}"
    group = RegisteringGroup.with_namesrv(tmp_path / "group", both, period_ms=PERIOD_MS)
    try:
        ns.start()
        other.start()
        group.start_all()
        yield ns, other, group
    finally:
        group.stop_all()
        ns.stop()
        other.stop()


def test_route_follows_the_leader_and_a_restarted_name_server(
    setup: tuple[NamesrvProcess, NamesrvProcess, RegisteringGroup],
) -> None:
    ns, other, group = setup
    addrs = eventually("the leader registered as id 0", lambda: leader_is_master(ns, group), 90)
    leader = group.node_of(addrs[0])
    assert sorted(addrs) == sorted([0, *(1 + sorted(group.peers).index(n) for n in group.peers if n != leader)])

    for _ in range(2):
        flip = kill_leader_and_time_flip(group, ns.address, timeout=60)
        assert flip.kill_to_flip < 30, flip
        eventually("the new leader registered as id 0", lambda: leader_is_master(ns, group), 60)
        group.start(flip.old)

    eventually("every replica registered", lambda: full_route(group, ns.address), 90)
    ns.kill()
    assert full_route(group, ns.address) is None
    assert full_route(group, other.address) is not None  # the second NameServer answers meanwhile
    ns.start()
    t0 = time.monotonic()
    eventually("every replica registered again", lambda: full_route(group, ns.address), 60)
    assert time.monotonic() - t0 < 30  # a second of retry plus a loaded machine's slack
    eventually("the leader registered as id 0", lambda: leader_is_master(ns, group), 60)
    eventually(
        "the second name server agrees", lambda: full_route(group, other.address) == full_route(group, ns.address), 60
    )


def test_malformed_frames_never_crash_the_name_server_process(tmp_path: pathlib.Path) -> None:
    ns = NamesrvProcess(tmp_path / "namesrv")
    ns.start()
    try:
        rng = random.Random(7)
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", ns.port), timeout=5) as s:
                s.sendall(
                    rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x08\x09\x00\x00\x04", b""]) + rng.randbytes(64)
                )
                s.settimeout(0.2)
                try:
                    s.recv(4096)
                except OSError:
                    pass
        assert ns.alive() and cluster_info(ns.address) is not None
        log = (tmp_path / "namesrv" / "namesrv.log").read_text()
        assert "Traceback" not in log and "closing the connection" in log
    finally:
        ns.kill(signal.SIGTERM)
    assert ns.proc is not None and ns.proc.returncode == 0
