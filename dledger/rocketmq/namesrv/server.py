"""`NameServer`: the processor behind a remoting server, with the periodic scan that drops silent brokers.

Invariants: requests are answered on the event loop one at a time (the processor is synchronous), so the
route table needs no locks; a connection that closes drops the brokers that registered over it; the scan
runs every `scan_interval` seconds (RocketMQ scans every 5 s) and logs one line per broker dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from dledger.rocketmq.namesrv.processor import NameServerProcessor
from dledger.rocketmq.remoting import DEFAULT_MAX_FRAME, RemotingCommand, RemotingConnection, RemotingServer

__all__ = ["DEFAULT_PORT", "NameServer"]

log = logging.getLogger("dledger.namesrv")

#: RocketMQ's NameServer port
DEFAULT_PORT = 9876


class NameServer:
    """`await start(host, port)`, serve, `await stop()`; `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        scan_interval: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.processor = NameServerProcessor(clock)
        self.scan_interval = scan_interval
        self._server = RemotingServer(self._handle, max_frame=max_frame, on_connection_lost=self._lost)
        self._scan: asyncio.Task[None] | None = None

    async def start(self, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> None:
        await self._server.start(host, port)
        self._scan = asyncio.get_running_loop().create_task(self._scan_loop())

    @property
    def port(self) -> int:
        return self._server.port

    async def stop(self) -> None:
        if self._scan is not None:
            self._scan.cancel()
            self._scan = None
        await self._server.close()

    async def _handle(self, cmd: RemotingCommand, conn: RemotingConnection) -> RemotingCommand | None:
        return self.processor.process(cmd, conn)

    def _lost(self, conn: RemotingConnection) -> None:
        for cluster, addr in self.processor.connection_closed(conn):
            log.info("namesrv: broker %s of cluster %s dropped: its connection closed", addr, cluster)

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            for cluster, addr in self.processor.expire():
                log.warning("namesrv: broker %s of cluster %s dropped: silent beyond its timeout", addr, cluster)
