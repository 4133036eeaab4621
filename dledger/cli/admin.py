"""`dledger admin topic|group|progress ...`: the broker admin RPC from the command line.

    dledger admin --cluster DIR topic create Orders --queues 4 --type FIFO
    dledger admin --endpoints 127.0.0.1:8081;127.0.0.1:8082 group update g1 --max-attempts 2 --fifo on
    dledger admin --cluster DIR progress g1 --topic Orders --json
    dledger admin --namesrv 127.0.0.1:9876 --cluster-name RaftCluster topic create Orders --queues 8

With a broker that has `accessKey` / `secretKey` set, give them with `--access-key` / `--secret-key` or in the
environment (DLEDGER_ACCESS_KEY / DLEDGER_SECRET_KEY; the flags win): every call is signed with them.

Output is a table for people, or the answer's `result` as JSON with `--json` (for scripts). Exit codes: 0 done,
1 refused or no replica answered (one line on stderr: `dledger admin: CODE: why`), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from dledger.broker_adapter.admin_client import AdminCallError, AdminClient, AdminRefused
from dledger.cli.admin_cluster import ClusterAdminError, call_cluster, cluster_groups
from dledger.node.config import ConfigError, parse_peers

__all__ = ["add_parser", "run"]

_TOPIC_COLUMNS = ("topic", "queues", "type", "perm")
_GROUP_COLUMNS = (
    "group",
    "max_attempts",
    "backoff_initial_ms",
    "backoff_max_ms",
    "backoff_multiplier",
    "fifo",
    "start",
)
_PROGRESS_COLUMNS = ("topic", "queue_id", "broker_offset", "consumer_offset", "lag", "inflight", "last_consume_ms")


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
    return text == "on"


def add_parser(subparsers: Any) -> None:
    """Register `dledger admin` on the CLI's subparsers."""
    p = subparsers.add_parser("admin", help="broker topics, consumer groups and consumer progress")
    p.add_argument("--endpoints", help="the replicas' RocketMQ endpoints: host:port;host:port;...")
    p.add_argument("--cluster", metavar="DIR", help="a local broker group started by `dledger cluster --broker`")
    p.add_argument("--namesrv", metavar="HOST:PORT", help="with --cluster-name: every group of a cluster")
    p.add_argument("--cluster-name", help="the brokerClusterName whose groups (from --namesrv) all get the request")
    p.add_argument("--token-file", metavar="PATH", help="a file holding a client token (client authorization)")
    p.add_argument("--access-key", help="the broker's accessKey (default: $DLEDGER_ACCESS_KEY)")
    p.add_argument("--secret-key", help="the broker's secretKey (default: $DLEDGER_SECRET_KEY; a flag shows in `ps`)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole request (default 10)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--any-replica", action="store_true", help="reads: the first replica's state (may lag)")
    what = p.add_subparsers(dest="what", metavar="topic|group|progress")
    what.required = True

    topic = what.add_parser("topic", help="list, describe, create, update or delete topics").add_subparsers(
        dest="action", metavar="ACTION"
    )
    topic.required = True
    topic.add_parser("list", help="every topic")
    for action in ("describe", "delete"):
        topic.add_parser(action, help=f"{action} one topic").add_argument("topic")
    for action in ("create", "update"):
        t = topic.add_parser(action, help=f"{action} a topic")
        t.add_argument("topic")
        t.add_argument("--queues", type=int, help="queue count (never shrinks; a FIFO topic's never changes)")
        t.add_argument("--type", choices=("NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED"), type=str.upper)
        t.add_argument("--perm", choices=("rw", "r", "w", "none"), help="read / write permission")

    group = what.add_parser("group", help="list, describe, create, update or delete consumer groups").add_subparsers(
        dest="action", metavar="ACTION"
    )
    group.required = True
    group.add_parser("list", help="every configured group")
    for action in ("describe", "delete"):
        group.add_parser(action, help=f"{action} one group").add_argument("group")
    for action in ("create", "update"):
        g = group.add_parser(action, help=f"{action} a group's settings")
        g.add_argument("group")
        g.add_argument("--max-attempts", type=int, help="deliveries before the dead-letter topic")
        g.add_argument("--backoff-initial-ms", type=int, help="push consumers: first wait before a retry")
        g.add_argument("--backoff-max-ms", type=int, help="push consumers: longest wait before a retry")
        g.add_argument("--backoff-multiplier", type=float, help="push consumers: wait growth per attempt")
        g.add_argument("--fifo", type=_on_off, metavar="on|off", help="deliver each message group in order")
        g.add_argument("--start", choices=("first", "last", "timestamp"), help="where the group starts on a topic")
        g.add_argument("--start-ms", type=int, help="with --start timestamp: epoch milliseconds")

    progress = what.add_parser("progress", help="a consumer group's progress per queue")
    progress.add_argument("group")
    progress.add_argument("--topic", help="one topic (default: every topic the group consumed)")
    p.set_defaults(func=run)


def _endpoints(args: argparse.Namespace) -> list[str]:
    if bool(args.namesrv) != bool(args.cluster_name):
        raise ConfigError("--namesrv and --cluster-name go together")
    if bool(args.endpoints) + bool(args.cluster) + bool(args.namesrv) != 1:
        raise ConfigError("give --endpoints, --cluster or --namesrv with --cluster-name (one of them)")
    if args.namesrv:
        return []
    if args.endpoints:
        return [e.strip() for e in args.endpoints.split(";") if e.strip()]
    path = pathlib.Path(args.cluster) / "cluster.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return list(parse_peers(state["endpoints"], key="endpoints").values())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--cluster: {path} names no broker endpoints ({exc!r})") from None


def _token(args: argparse.Namespace) -> str | None:
    if not args.token_file:
        return None
    try:
        token = pathlib.Path(args.token_file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file: cannot read {args.token_file!r}: {exc}") from None
    if not token:
        raise ConfigError(f"--token-file: {args.token_file!r} is empty")
    return token


def _credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    """(accessKey, secretKey) from the flags, else the environment; None when neither gives any."""
    ak = args.access_key if args.access_key is not None else os.environ.get("DLEDGER_ACCESS_KEY", "")
    sk = args.secret_key if args.secret_key is not None else os.environ.get("DLEDGER_SECRET_KEY", "")
    ak, sk = ak.strip(), sk.strip()
    if bool(ak) != bool(sk):
        raise ConfigError("--access-key and --secret-key (or DLEDGER_ACCESS_KEY and DLEDGER_SECRET_KEY): give both")
    return (ak, sk) if ak else None


def request_of(args: argparse.Namespace) -> dict[str, Any]:
    """The admin request the arguments ask for (`admin_ops.py`)."""
    if args.what == "progress":
        req: dict[str, Any] = {"op": "progress", "group": args.group, "topic": args.topic}
    else:
        req = {"op": f"{args.what}.{args.action}"}
    if args.any_replica:
        req["any_replica"] = True
    name = "topic" if args.what == "topic" else "group"
    if hasattr(args, name):
        req[name] = getattr(args, name)
    if args.what == "topic" and args.action in ("create", "update"):
        req.update(queues=args.queues, type=args.type, perm=args.perm)
    if args.what == "group" and args.action in ("create", "update"):
        req.update(
            max_attempts=args.max_attempts,
            backoff_initial_ms=args.backoff_initial_ms,
            backoff_max_ms=args.backoff_max_ms,
            backoff_multiplier=args.backoff_multiplier,
            fifo=args.fifo,
            start=args.start,
            start_ms=args.start_ms,
        )
    return {k: v for k, v in req.items() if v is not None}


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render(op: str, result: Any) -> str:
    """What a person reads for the result of `op`."""
    if result is None:
        return "done"
    if op == "progress":
        return table(result, _PROGRESS_COLUMNS) if result else "no progress (the group consumed nothing here)"
    if op == "topic.list":
        return table(result, _TOPIC_COLUMNS)
    if op == "group.list":
        return table(result, _GROUP_COLUMNS) if result else "no configured groups"
    rows = {k: v for k, v in result.items() if not isinstance(v, list)}
    text = "\n".join(f"{k}: {v}" for k, v in rows.items())
    if "queue_offsets" in result:
        text += "\n" + table(result["queue_offsets"], ("queue", "min_offset", "max_offset"))
    if result.get("progress"):
        text += "\n" + table(result["progress"], _PROGRESS_COLUMNS)
    return text


def run(args: argparse.Namespace) -> int:
    try:
        endpoints = _endpoints(args)
        token = _token(args)
        credentials = _credentials(args)
    except ConfigError as exc:
        print(f"dledger admin: {exc}", file=sys.stderr)
        return 2
    req = request_of(args)
    if args.namesrv:
        return _run_on_cluster(args, req, token, credentials)
    try:
        with AdminClient(endpoints, token=token, timeout=args.timeout, credentials=credentials) as client:
            answer = client.call(req)
    except AdminRefused as exc:
        print(f"dledger admin: refused: {exc}", file=sys.stderr)
        return 1
    except AdminCallError as exc:
        print(f"dledger admin: no answer: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"dledger admin: {answer.get('code', 'ERROR')}: {answer.get('error', '')}", file=sys.stderr)
        return 1
    result = answer.get("result")
    print(json.dumps(result, indent=2) if args.json else render(req["op"], result))
    return 0


def _run_on_cluster(
    args: argparse.Namespace, req: dict[str, Any], token: str | None, credentials: tuple[str, str] | None
) -> int:
    """`req` on every group of `--cluster-name`: each group's result under its broker name; 1 if any refused."""
    try:
        groups = cluster_groups(args.namesrv, args.cluster_name, timeout=min(args.timeout, 3.0))
    except ClusterAdminError as exc:
        print(f"dledger admin: {exc}", file=sys.stderr)
        return 1
    failed = False
    results: dict[str, Any] = {}
    for g in call_cluster(groups, req, token=token, timeout=args.timeout, credentials=credentials):
        if g.answer is None:
            print(f"dledger admin: {g.broker_name}: no answer: {g.error}", file=sys.stderr)
            failed = True
        elif not g.answer.get("ok"):
            code, why = g.answer.get("code", "ERROR"), g.answer.get("error", "")
            print(f"dledger admin: {g.broker_name}: {code}: {why}", file=sys.stderr)
            failed = True
        else:
            results[g.broker_name] = g.answer.get("result")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, result in results.items():
            print(f"{name}:\n" + "\n".join("  " + line for line in render(req["op"], result).splitlines()))
    return 1 if failed else 0
