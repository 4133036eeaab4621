"""Free TCP ports for local groups (nodes, brokers, NameServers) that bind them a moment later.

A port is chosen by binding it (every chosen port held open until all are chosen, so they are distinct),
then released for the process that will listen on it. Invariant: ports come from 15000-29999, below the
fixed ports of conf/ and the README, and below the kernel's ephemeral range
(`/proc/sys/net/ipv4/ip_local_port_range`): every outgoing connection on the host takes its local port from
that range, so a port chosen there (what binding port 0 gives) can be taken by any client's `connect` before
the server binds it ("address already in use" on a busy host). Where the range cannot be read, or leaves
too little room below it, binding port 0 is the fallback.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port_pairs", "free_ports"]

_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_LOWEST = 15000  # above the well-known and the registered ports most services use (RocketMQ's 9876, 10911)
_HIGHEST = 30000  # below the fixed ports of conf/ and the README's examples (30911..., 40811...)
_ROOM = 2000  # fewer candidates than this below the ephemeral range: fall back to port 0


def _candidates(span: int) -> list[int] | None:
    """Ports p below the ephemeral range with p + `span` below it too, in random order; None: use port 0."""
    try:
        with open(_EPHEMERAL_RANGE) as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    top = min(low, _HIGHEST) - span
    if top - _LOWEST < _ROOM:
        return None
    ports = list(range(_LOWEST, top))
    random.SystemRandom().shuffle(ports)
    return ports


def _hold(host: str, port: int, socks: list[socket.socket]) -> int | None:
    """Bind `port` (0: any) and keep the socket in `socks`; the bound port, or None if it was taken."""
    s = socket.socket()
    socks.append(s)
    try:
        s.bind((host, port))
    except OSError:
        return None
    return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports that were free when chosen."""
    return free_port_pairs(n, 0, host)


def free_port_pairs(n: int, offset: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports p such that p + `offset` was free too (the TCP peer transport's port, see tcp_peer);
    every port is held open until all are chosen, so no p + offset is another's p. `offset` 0: single ports."""
    socks: list[socket.socket] = []
    out: list[int] = []
    candidates = _candidates(offset)
    try:
        tries = iter(candidates) if candidates is not None else iter([0] * (64 * n))
        for wanted in tries:
            if len(out) == n:
                break
            port = _hold(host, wanted, socks)
            if port is None or not 1 <= port + offset <= 65535:
                continue
            if offset and _hold(host, port + offset, socks) is None:
                continue
            out.append(port)
        if len(out) == n:
            return out
        above = f" with a free port {offset} above" if offset else ""
        raise OSError(f"found only {len(out)} of {n} free ports{above}")
    finally:
        for s in socks:
            s.close()
