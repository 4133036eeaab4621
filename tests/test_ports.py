"""Ports for local groups are chosen below the kernel's ephemeral range, distinct, and free when chosen."""

from __future__ import annotations

import socket

import pytest

from dledger.testing import ports
from dledger.testing.ports import free_port_pairs, free_ports


def _ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    try:
        low = _ephemeral_low()
    except OSError:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    chosen = free_ports(40)
    assert len(set(chosen)) == 40
    if low - 15000 >= 2000:
        assert all(p < low for p in chosen), (low, chosen)
    for p in chosen[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # free: nothing kept it


def test_pairs_leave_the_port_offset_above_free_and_below_the_range() -> None:
    try:
        low = _ephemeral_low()
    except OSError:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    chosen = free_port_pairs(10, 1000)
    assert len(set(chosen) | {p + 1000 for p in chosen}) == 20
    if low - 15000 - 1000 >= 2000:
        assert all(p + 1000 < low for p in chosen)


def test_a_taken_port_is_skipped_and_an_unreadable_range_falls_back_to_port_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", "/nonexistent/ip_local_port_range")
    assert len(set(free_ports(8))) == 8
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(ports, "_candidates", lambda span: [taken, *range(20000, 20100)])
        assert taken not in free_ports(3)
