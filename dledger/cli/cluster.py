"""`dledger cluster`: a local group of node processes with a live status table; `dledger cluster stop DIR`.

Foreground (default): start the nodes, redraw the table every `--refresh` seconds, and on Ctrl-C stop them
all gracefully. `--detach`: start them in their own session, wait until each is ready (a node that exits
instead is reported with its last log line, and the others are stopped), print how to reach them, and
return; the state file in the store dir lets `dledger cluster stop DIR` and `dledger status --cluster DIR` find them.
`--broker`: the same for broker replicas; `--broker --groups N`: a NameServer and N broker groups registering
with it (dledger/cli/broker_groups.py). A directory whose group still runs is refused (exit 1), and
SIGTERM or SIGHUP to a foreground group stops its nodes as Ctrl-C does.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dledger.cli.broker_groups import run_local_groups, stop_groups
from dledger.cli.client import format_status_table
from dledger.client.client import DLedgerClient, NodeInfo
from dledger.node.config import ConfigError, format_peers
from dledger.testing.launcher import (
    READY_TIMEOUT_S,
    ClusterRunningError,
    ClusterStartError,
    LocalProcessGroup,
    log_sizes,
    refuse_if_running,
    stop_detached,
    stop_on_terminate,
    wait_ready,
)

__all__ = ["add_cluster_commands", "with_lag"]


def with_lag(nodes: list[NodeInfo]) -> list[tuple[NodeInfo, int | None]]:
    """Each node with how far its applied index trails the leader's last index (None if unknown)."""
    leader = next((n for n in nodes if n.reachable and n.role == "leader"), None)
    return [(n, leader.last_index - n.applied_index if leader and n.reachable else None) for n in nodes]


def _table(client: DLedgerClient) -> str:
    nodes = client.status(timeout=0.5)
    table = format_status_table(nodes).splitlines()
    lags = with_lag(nodes)
    width = max(len(line) for line in table)
    out = [table[0].ljust(width) + "  LAG"]
    for line, (_, lag) in zip(table[1:], lags, strict=True):
        out.append(line.ljust(width) + f"  {'-' if lag is None else lag}")
    return "\n".join(out)


LEADER_WAIT = 30.0  # seconds `cluster --detach` waits for the group to elect before it returns


def _wait_for_leader(peers: dict[str, str], group: str, timeout: float) -> str | None:
    """The leader's id once every node answers and one leads (None after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    with DLedgerClient(peers, group=group) as client:
        while time.monotonic() < deadline:
            nodes = client.status(timeout=1.0)
            leaders = [n.id for n in nodes if n.reachable and n.role == "leader"]
            if len(leaders) == 1 and all(n.reachable for n in nodes):
                return leaders[0]
            time.sleep(0.05)
    return None


def _cmd_cluster(args: argparse.Namespace) -> int:
    if args.action == "stop":
        if not args.dir:
            raise ConfigError("usage: dledger cluster stop DIR")
        stopped = stop_groups(args.dir)
        if stopped is None:
            stopped = stop_detached(args.dir)
        print(f"stopped {', '.join(stopped) or 'nothing (no live nodes)'}")
        return 0
    root = args.store_dir or args.dir
    if not root:
        raise ConfigError("give --store-dir DIR (where the nodes keep their stores and logs)")
    refuse_if_running(root)
    if args.groups is not None:
        if not args.broker:
            raise ConfigError("--groups needs --broker (broker groups registering with a NameServer)")
        if args.base_port is not None or args.nodes != 3:
            raise ConfigError("--groups starts groups of 3 replicas on free ports: drop --nodes and --base-port")
        return run_local_groups(root, args.groups, flush=args.flush, detach=args.detach)
    if args.broker:
        from dledger.cli.broker import run_local_group

        return int(
            run_local_group(
                root, args.nodes, group=args.group, flush=args.flush, base_port=args.base_port, detach=args.detach
            )
        )
    group = LocalProcessGroup.create(root, args.nodes, base_port=args.base_port, group=args.group, flush=args.flush)
    group.detached = args.detach
    if args.detach:
        offsets = log_sizes(group.root, group.peers)
        group.start_all()
        failed = wait_ready(group.root, offsets, group.alive, READY_TIMEOUT_S)
        if failed:
            group.stop_all()
            raise ClusterStartError("; ".join(f"{node_id} {why}" for node_id, why in failed.items()))
        print(f"started {len(group.peers)} nodes of group {args.group!r}: {format_peers(group.peers)}")
        print(f"logs and stores in {group.root}")
        print(f"status: dledger status --cluster {group.root}\nstop:   dledger cluster stop {group.root}")
        leader = _wait_for_leader(group.peers, args.group, LEADER_WAIT)
        if leader is None:
            print(f"no leader within {LEADER_WAIT:.0f} s: see {group.root}/<id>.log", file=sys.stderr)
            return 1
        print(f"leader: {leader}")
        return 0
    stop_on_terminate()
    try:
        group.start_all()
        print(f"started {len(group.peers)} nodes of group {args.group!r}: {format_peers(group.peers)}")
        print(f"logs and stores in {group.root}")
        with DLedgerClient(group.peers, group=args.group) as client:
            while True:
                dead = [i for i in group.peers if not group.alive(i)]
                text = _table(client)
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(f"dledger cluster {group.root}  (Ctrl-C stops every node)\n{text}", flush=True)
                if dead:
                    print(f"exited: {', '.join(dead)} (see {group.root}/<id>.log)")
                if args.once:
                    return 0
                time.sleep(args.refresh)
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        group.stop_all()


def add_cluster_commands(sub: Any) -> None:
    p = sub.add_parser("cluster", help="run a local group of nodes (or: cluster stop DIR)")
    p.add_argument("action", nargs="?", choices=("start", "stop"), default="start")
    p.add_argument("dir", nargs="?", help="with stop: the --store-dir of a detached group")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--store-dir", help="where the nodes keep stores and logs")
    p.add_argument("--base-port", type=int, help="first port (default: free ports the system picks)")
    p.add_argument("--group", default="default", help="group name (default 'default')")
    p.add_argument("--flush", choices=("sync", "async"), default="async")
    p.add_argument("--detach", action="store_true", help="leave the nodes running and return")
    p.add_argument("--broker", action="store_true", help="broker replicas for RocketMQ 5 clients (dledger[rocketmq])")
    p.add_argument(
        "--groups",
        type=int,
        help="with --broker: a NameServer and this many broker groups of 3 replicas registering with it",
    )
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between table redraws")
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_run_cluster)


def _run_cluster(args: argparse.Namespace) -> int:
    try:
        return _cmd_cluster(args)
    except ConfigError as exc:
        print(f"dledger cluster: {exc}", file=sys.stderr)
        return 2
    except (ClusterRunningError, ClusterStartError) as exc:
        print(f"dledger cluster: {exc}", file=sys.stderr)
        return 1
