"""A dledger node whose load runs inside its own process, for the like-for-like latency figure of `bench/e2e.py`.

    python -m bench.embedded_node <the flags of `dledger node`>

It runs the node `dledger node` runs (same flags and config, event loop, malloc and collector settings, gRPC services
and peer transport; not `--report-durable-ms` or the signal handlers) and adds a line-based JSON control pipe on
stdin/stdout, like `bench/pysyncobj_peer.py`: PySyncObj has no client protocol, so its load runs inside its leader, and
this lets dledger's be measured the same way (a broker embedding `DLedgerServer` appends the same way):
- `{"cmd": "load", "payload": N, "max_ops": K, "seconds": S}`: K synchronous appends of one N-byte entry
  with `DLedgerServer.append` (each waits for its commit on a quorum) on the node's loop; the reply counts
  them and carries each one's latency in ms. Only the leader takes load (`{"error": "not leader"}`);
- `{"cmd": "quit"}`: stop the node and exit.
It prints `{"ready": true}` once the node serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from dledger.cli.node import add_node_commands, config_from_args, configure_logging, start_node
from dledger.node import tuning
from dledger.node.config import NodeConfig
from dledger.node.server import DLedgerServer
from dledger.node.tuning import tune_malloc


async def _load(server: DLedgerServer, req: dict[str, Any]) -> dict[str, Any]:
    if not server.is_leader:
        return {"error": "not leader"}
    data = os.urandom(int(req["payload"]))
    max_ops, deadline = int(req["max_ops"]), time.perf_counter() + float(req.get("seconds", 60.0))
    lats: list[float] = []
    errors = 0
    start = time.perf_counter()
    while len(lats) + errors < max_ops and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            await server.append([data])
        except Exception:
            errors += 1
            await asyncio.sleep(0.01)
            continue
        lats.append((time.perf_counter() - t0) * 1000)
    return {"entries": len(lats), "errors": errors, "seconds": time.perf_counter() - start, "lat_ms": lats}


async def _serve(config: NodeConfig) -> None:
    server = await start_node(config)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def control() -> None:  # a thread: blocking reads of stdin, each request run on the node's loop
        out = sys.stdout
        out.write(json.dumps({"ready": True}) + "\n")
        out.flush()
        try:
            for line in sys.stdin:
                try:
                    req = json.loads(line)
                except ValueError:
                    continue
                if req.get("cmd") == "quit":
                    break
                try:
                    if req.get("cmd") == "load":
                        reply = asyncio.run_coroutine_threadsafe(_load(server, req), loop).result()
                    else:
                        reply = {"error": f"unknown command {req.get('cmd')!r}"}
                except Exception as exc:  # a malformed request: say so, keep serving
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                out.write(json.dumps(reply) + "\n")
                out.flush()
        finally:  # quit, end of input, or a broken pipe: stop the node either way
            loop.call_soon_threadsafe(_settle, done)

    threading.Thread(target=control, name="bench-control", daemon=True).start()
    await done
    await server.stop()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedded_node")
    add_node_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["node", *(sys.argv[1:] if argv is None else argv)])
    configure_logging(args.log_level)
    tune_malloc()
    tuning.run(_serve(config_from_args(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
