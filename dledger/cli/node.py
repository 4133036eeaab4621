"""`dledger node`: run one node in the foreground until SIGTERM or SIGINT, then stop gracefully.

Settings come from `--config broker.conf` (RocketMQ keys) and/or flags; a flag given wins over the file.
A bad setting prints one line naming it and exits 2; a store or port problem exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from dledger.commitlog import StoreInUseError
from dledger.node import tuning
from dledger.node.config import ConfigError, NodeConfig, parse_peers, read_peer_secret
from dledger.node.server import DLedgerServer
from dledger.node.tuning import tune_gc, tune_malloc
from dledger.testing.launcher import listen_problem

__all__ = ["add_node_commands", "add_tls_flags", "config_from_args"]

log = logging.getLogger("dledger.node")


def add_tls_flags(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument("--tls-ca", help="PEM CA that signs every node and client (enables mutual TLS)")
    p.add_argument("--tls-cert", help=f"PEM certificate: {whose}")
    p.add_argument("--tls-key", help=f"PEM private key: {whose}")


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    overrides: dict[str, Any] = {
        "group": args.group,
        "self_id": args.id,
        "peers": parse_peers(args.peers, key="--peers") if args.peers else None,
        "store_dir": args.store_dir,
        "flush": args.flush,
        "preferred_leader": args.preferred_leader,
        "metrics_port": args.metrics_port,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "join": True if args.join else None,
        "snapshot_entries": args.snapshot_entries,
        "peer_secret": read_peer_secret(args.peer_secret_file) if args.peer_secret_file else None,
        "peer_auth": args.peer_auth,
        "client_grants": args.client_grants,
        "peer_transport": args.peer_transport,
    }
    if args.config:
        return NodeConfig.from_file(args.config, overrides=overrides)
    missing = [
        flag
        for flag, key in (("--id", "self_id"), ("--peers", "peers"), ("--store-dir", "store_dir"))
        if overrides[key] is None
    ]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give --config broker.conf)")
    return NodeConfig(**{k: v for k, v in overrides.items() if v is not None})


class NodeLogFilter(logging.Filter):
    """Puts the node id and its current term into every log record (`%(node)s`, `%(term)s`)."""

    def __init__(self, server: DLedgerServer) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        core = self.server.node.core
        record.node = self.server.config.self_id
        record.term = core.current_term if core is not None else 0
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s [%(node)s t%(term)s] %(name)s: %(message)s"
#: what `%(node)s` and `%(term)s` read before the node exists (config warnings, startup errors)
LOG_DEFAULTS = {"node": "-", "term": 0}


def configure_logging(level: str) -> None:
    """The root handler of `dledger node`: LOG_FORMAT, with defaults for the fields `NodeLogFilter` fills, so
    a record logged before the node is built (an unknown config key) prints as one line, not a logging error."""
    logging.basicConfig(level=getattr(logging, level.upper()))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT, defaults=LOG_DEFAULTS))


async def start_node(config: NodeConfig, durable_report_ms: int | None = None) -> DLedgerServer:
    """The node of `dledger node`, started: log records carry its id and term, the collector is tuned, and
    where it serves is logged. (`bench.embedded_node` starts its node with this too.)"""
    server = DLedgerServer(config, durable_report_ms=durable_report_ms)
    for handler in logging.getLogger().handlers:
        handler.addFilter(NodeLogFilter(server))
    await server.start()
    tune_gc()  # after start: what recovery and imports built is frozen out of every collection
    if server.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, server.metrics_port)
    log.info(
        "node %s of group %s serving on %s (store %s, flush %s, %s)",
        config.self_id,
        config.group,
        config.address,
        config.store_dir,
        config.flush,
        tuning.loop_name(asyncio.get_running_loop()),
    )
    return server


async def _serve(config: NodeConfig, durable_report_ms: int | None = None) -> None:
    server = await start_node(config, durable_report_ms)
    print(f"dledger node {config.self_id} ready on {config.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping", config.self_id)
    await server.stop()


def _cmd_node(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"dledger node: {exc}", file=sys.stderr)
        return 2
    try:
        factory = tuning.loop_factory()
    except tuning.EventLoopChoiceError as exc:
        print(f"dledger node: {exc}", file=sys.stderr)
        return 2
    problem = listen_problem(config)
    if problem:
        print(f"dledger node: {problem}", file=sys.stderr)
        return 1
    tune_malloc()
    try:
        tuning.run(_serve(config, args.report_durable_ms), factory)
    except ConfigError as exc:  # a file a setting names (grants, certificates) read at start
        print(f"dledger node: {exc}", file=sys.stderr)
        return 2
    except StoreInUseError as exc:
        print(f"dledger node: the store is in use: {exc} (another node runs on it)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dledger node: {exc}", file=sys.stderr)
        return 1
    return 0


def add_node_commands(sub: Any) -> None:
    p = sub.add_parser("node", help="run one node of a group in the foreground")
    p.add_argument("--config", help="a RocketMQ-style broker.conf (dLegerGroup, dLegerPeers, dLegerSelfId, ...)")
    p.add_argument("--group", help="the group name (dLegerGroup; default 'default')")
    p.add_argument("--id", help="this node's id (dLegerSelfId)")
    p.add_argument("--peers", help="every node: n0-host:port;n1-host:port;... (dLegerPeers)")
    p.add_argument("--store-dir", help="where this node keeps its log and state (storePathRootDir)")
    p.add_argument("--flush", choices=("sync", "async"), help="sync: fsync before acknowledging (default async)")
    p.add_argument("--preferred-leader", help="a node that should lead whenever it is healthy")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (dledgerMetricsPort)")
    p.add_argument(
        "--join",
        action="store_true",
        help="start as a new member: --peers lists the running group and this node; it receives the log "
        "once a member adds it (`dledger member add ID --address HOST:PORT`) and votes once promoted",
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        metavar="N",
        help="take a snapshot every N applied entries (snapshotThreshold; default 1000000; 0: only on compaction)",
    )
    add_tls_flags(p, "this node's")
    p.add_argument(
        "--peer-secret-file",
        metavar="PATH",
        help="a file holding the group's peer secret (dLegerPeerSecretFile): peers prove it to each other",
    )
    p.add_argument(
        "--peer-auth",
        choices=("secret", "tls", "none"),
        help="how peers authenticate (dLegerPeerAuth; default: secret when one is given, else tls with TLS, "
        "else none, which only a group on loopback may run without saying so)",
    )
    p.add_argument(
        "--peer-transport",
        choices=("grpc", "tcp"),
        help="how peers replicate (dLegerPeerTransport; default grpc): tcp is framed TCP on each node's "
        "port + dledgerPeerPortOffset (default 1000); every node of a group must use the same",
    )
    p.add_argument(
        "--client-grants",
        metavar="FILE",
        help="turn on client authorization: FILE lists tokens and client certificates with their rights "
        "(dledgerClientGrantsFile; see docs/security.md)",
    )
    p.add_argument(
        "--report-durable-ms",
        type=int,
        metavar="MS",
        help="for fault tests: write <store-dir>/log/DURABLE (fsynced lengths) every MS ms",
    )
    p.set_defaults(func=_cmd_node)
