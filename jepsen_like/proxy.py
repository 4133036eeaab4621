"""The non-root fallback for partitions: one loopback TCP proxy per directed link between nodes.

Node a reaches node b through `proxy(a, b)` (a port of its own on 127.0.0.1), so each node gets its own
`--peers` string: its own real address, and the proxies' addresses for the others. Clients use the real
addresses and are never cut off. A cut between a and b closes every connection of both links and
black-holes new ones (accepted, read and discarded, never forwarded), which looks like dropped packets to
the nodes: their calls time out rather than fail fast. Healing lets new connections through.

Invariants: only 127.0.0.1 is used; the proxies run on one asyncio loop in a daemon thread of the
controller; `partition` returns after the cut is in force (existing connections are closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from dledger.testing.launcher import free_port_pairs, free_ports

__all__ = ["LinkProxies", "free_ports"]


class LinkProxies:
    """Proxies for every ordered pair of `addresses` (node id -> real 127.0.0.1:port)."""

    def __init__(
        self, addresses: dict[str, str], avoid: Iterable[int] = (), peer_port_offset: int | None = None
    ) -> None:
        """`avoid`: ports the run uses otherwise (the nodes' own and their endpoints'), which were chosen and
        released before; a proxy on one of them would keep that node from ever starting. `peer_port_offset`:
        the nodes also take peer frames on their port + this (the tcp peer transport), so each link's proxy
        listens there too (its port + this), and a cut cuts both."""
        self.addresses = dict(addresses)
        self.offset = peer_port_offset
        ids = list(addresses)
        links = [(a, b) for a in ids for b in ids if a != b]
        taken = {int(a.rpartition(":")[2]) for a in addresses.values()} | set(avoid)
        if peer_port_offset is not None:
            taken |= {p + peer_port_offset for p in taken}
            chosen = free_port_pairs(len(links) + len(taken), peer_port_offset)
            chosen = [p for p in chosen if p not in taken and p + peer_port_offset not in taken]
        else:
            chosen = [p for p in free_ports(len(links) + len(taken)) if p not in taken]
        ports = chosen[: len(links)]
        self.ports = dict(zip(links, ports, strict=True))
        self.cuts: set[frozenset[str]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jepsen-proxy", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._conns: dict[tuple[str, str], set[asyncio.StreamWriter]] = {link: set() for link in links}

    def peers_for(self, node_id: str) -> dict[str, str]:
        """The peers map node `node_id` is started with."""
        return {other: (addr if other == node_id else f"127.0.0.1:{self.ports[(node_id, other)]}")
                for other, addr in self.addresses.items()}  # fmt: skip

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        shifts = [0] if self.offset is None else [0, self.offset]
        for (a, b), port in self.ports.items():
            for shift in shifts:
                server = await asyncio.start_server(
                    self._handler((a, b), shift), "127.0.0.1", port + shift, reuse_address=True
                )
                self._servers.append(server)

    def _handler(
        self, link: tuple[str, str], shift: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(link, reader, writer, shift)

        return handle

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _stop(self) -> None:
        for server in self._servers:
            server.close()
        for conns in self._conns.values():
            for w in list(conns):
                w.close()

    def partition(self, cuts: Iterable[frozenset[str]]) -> None:
        asyncio.run_coroutine_threadsafe(self._partition({c for c in cuts if len(c) == 2}), self._loop).result(10)

    def heal(self) -> None:
        self.partition(())

    async def _partition(self, cuts: set[frozenset[str]]) -> None:
        self.cuts = cuts
        for (a, b), conns in self._conns.items():
            if frozenset((a, b)) in cuts:
                for w in list(conns):
                    w.close()
                conns.clear()

    def _is_cut(self, link: tuple[str, str]) -> bool:
        return frozenset(link) in self.cuts

    async def _serve(
        self, link: tuple[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shift: int = 0
    ) -> None:
        if self._is_cut(link):
            await _blackhole(reader, writer, lambda: not self._is_cut(link))
            return
        host, _, port = self.addresses[link[1]].rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port) + shift)
        except OSError:
            writer.close()
            return
        conns = self._conns[link]
        conns.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                conns.discard(w)
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, healed: Callable[[], bool]) -> None:
    """Swallow bytes until the peer gives up or the cut heals (then close, so the peer reconnects)."""
    with contextlib.suppress(OSError, ConnectionError):
        while not healed():
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                continue
            if not data:
                break
    writer.close()
