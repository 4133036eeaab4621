"""`dledger namesrv [--port 9876]`: run a NameServer in the foreground (RocketMQ's `mqnamesrv`).

No disk state: routes come from brokers' registrations. SIGINT / SIGTERM stop it cleanly (exit 0); a port
that cannot be bound is one line on stderr and exit 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from dledger.rocketmq.namesrv.server import DEFAULT_PORT, NameServer

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register `dledger namesrv` on the CLI's subparsers."""
    p = subparsers.add_parser("namesrv", help="run a RocketMQ NameServer (route registry for brokers and clients)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument(
        "--scan-interval",
        type=float,
        default=5.0,
        help="seconds between scans for silent brokers (default 5; a broker silent 120 s is dropped)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> None:
    server = NameServer(scan_interval=args.scan_interval)
    await server.start(args.host, args.port)
    print(f"dledger namesrv ready on {args.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"dledger namesrv: --port {args.port} is not a port (0..65535)", file=sys.stderr)
        return 2
    if not args.scan_interval > 0:
        print(f"dledger namesrv: --scan-interval {args.scan_interval} must be above 0", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"dledger namesrv: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
