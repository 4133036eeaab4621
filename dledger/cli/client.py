"""CLI commands that talk to a running group as a client: `append`, `get`, `status`, `transfer-leader`,
`member add|promote|remove|list`.

Each command takes `--peers` (the `dLegerPeers` format) or `--config broker.conf`, and `--group`.
Exit codes: 0 ok; 1 the group answered with an error (not leader within the deadline, not found, ...);
3 the outcome of a write is unknown (it may or may not have been appended); 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from dataclasses import asdict
from typing import Any

from dledger.cli.broker_groups import groups_of
from dledger.cli.namesrv_status import NamesrvStatusError, broker_rows, fetch_cluster_info, format_broker_table
from dledger.client.client import DLedgerClient, Member, NodeInfo
from dledger.client.client_policy import DLedgerError, OutcomeUnknownError
from dledger.net.tls import TlsConfig
from dledger.node.config import ConfigError, format_peers, load_properties, parse_address, parse_peers
from dledger.testing.launcher import load_state

__all__ = ["add_client_commands", "format_status_table"]

EXIT_UNKNOWN = 3


def _peers_of(args: argparse.Namespace) -> tuple[str, str]:
    if getattr(args, "cluster", None):
        group, peers_map, _ = load_state(args.cluster)
        return format_peers(peers_map), args.group or group
    if args.peers:
        peers = args.peers
        group = args.group or "default"
    elif args.config:
        props = load_properties(args.config)
        if "dLegerPeers" not in props:
            raise ConfigError(f"{args.config}: no dLegerPeers key")
        peers = props["dLegerPeers"]
        group = args.group or props.get("dLegerGroup", "default")
    else:
        raise ConfigError("give --peers ID-host:port;..., --config broker.conf or --cluster DIR")
    return format_peers(parse_peers(peers, key="--peers")), group


def _tls_of(args: argparse.Namespace) -> TlsConfig | None:
    ca, cert, key = args.tls_ca, args.tls_cert, args.tls_key
    if args.config and ca is None:
        props = load_properties(args.config)
        ca, cert, key = props.get("dledgerTlsCa"), props.get("dledgerTlsCert"), props.get("dledgerTlsKey")
    if ca is None:
        if cert or key:
            raise ConfigError("--tls-cert and --tls-key need --tls-ca")
        return None
    return TlsConfig(
        ca=pathlib.Path(ca), cert=pathlib.Path(cert) if cert else None, key=pathlib.Path(key) if key else None
    )


def _client(args: argparse.Namespace) -> DLedgerClient:
    peers, group = _peers_of(args)
    return DLedgerClient(peers, group=group, timeout=args.timeout, tls=_tls_of(args), token=_token_of(args))


def _token_of(args: argparse.Namespace) -> str | None:
    """The bearer token in `--token-file` (white space stripped), for a group with client authorization."""
    if not args.token_file:
        return None
    try:
        token = pathlib.Path(args.token_file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file: cannot read {args.token_file!r}: {exc}") from None
    if not token:
        raise ConfigError(f"--token-file: {args.token_file!r} is empty")
    return token


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", help="the group's peers: n0-host:port;n1-host:port;...")
    p.add_argument("--config", help="a broker.conf with dLegerPeers (and dLegerGroup)")
    p.add_argument("--cluster", metavar="DIR", help="a local group started by `dledger cluster --store-dir DIR`")
    p.add_argument("--group", help="the group name (default: from --config, else 'default')")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for the whole request (default 5)")
    p.add_argument("--tls-ca", help="PEM CA that signed the nodes' certificates")
    p.add_argument("--tls-cert", help="PEM client certificate (for mutual TLS)")
    p.add_argument("--tls-key", help="PEM client key (for mutual TLS)")
    p.add_argument("--token-file", metavar="PATH", help="a file holding a client token (client authorization)")


def _run(func: Any) -> Any:
    """Wrap a command: map client and config errors to exit codes and one clear line on stderr."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ConfigError as exc:
            print(f"dledger: {exc}", file=sys.stderr)
            return 2
        except OutcomeUnknownError as exc:
            print(f"dledger: outcome unknown: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
        except DLedgerError as exc:
            print(f"dledger: {exc}", file=sys.stderr)
            return 1

    return wrapped


def _cmd_append(args: argparse.Namespace) -> int:
    items = [s.encode() for s in args.data] if args.data else [sys.stdin.buffer.read()]
    with _client(args) as client:
        results = client.append_batch(items)
    for r in results:
        print(f"{r.index}\t{r.term}")
    return 0


MAX_INDEX = (1 << 63) - 1  # indexes travel as 64-bit integers


def entry_index(text: str) -> int:
    """An argparse type: a log index, 0 <= index < 2**63 (a bad one is a usage error, not a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an index: {text!r}") from None
    if not 0 <= value <= MAX_INDEX:
        raise argparse.ArgumentTypeError(f"an index is between 0 and {MAX_INDEX}, not {value}")
    return value


def _cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        entry = client.get(args.index)
    if args.raw:
        sys.stdout.buffer.write(entry.data)
    else:
        print(
            json.dumps(
                {
                    "index": entry.index,
                    "term": entry.term,
                    "kind": entry.kind.name,
                    "data": entry.data.decode("utf-8", "backslashreplace"),
                }
            )
        )
    return 0


def format_status_table(nodes: list[NodeInfo]) -> str:
    header = ("ID", "ADDRESS", "ROLE", "TERM", "LEADER", "LAST", "COMMIT", "APPLIED", "HEALTHY", "ERROR")
    rows = [header]
    for n in nodes:
        rows.append(
            (
                n.id,
                n.address,
                n.role or "-",
                str(n.term),
                n.leader_id or "-",
                str(n.last_index),
                str(n.commit_index),
                str(n.applied_index),
                "yes" if n.healthy else "no",
                n.error,
            )
            if n.reachable
            else (n.id, n.address, "unreachable", "-", "-", "-", "-", "-", "no", n.error)
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _cmd_status(args: argparse.Namespace) -> int:
    if args.namesrv:
        return _namesrv_status(args)
    if args.cluster and (groups := groups_of(args.cluster)) is not None:
        return _groups_status(args, *groups)
    with _client(args) as client:
        nodes = client.status(timeout=min(args.timeout, 2.0))
    if args.json:
        print(json.dumps([asdict(n) for n in nodes], indent=2))
    else:
        print(format_status_table(nodes))
    return 0 if all(n.reachable for n in nodes) else 1


def _groups_status(args: argparse.Namespace, groups: list[tuple[str, pathlib.Path]], namesrv: str) -> int:
    """`--cluster DIR` of `dledger cluster --broker --groups N`: each group's replicas, then what the NameServer
    names as each group's master; 1 when a replica or the NameServer does not answer."""
    report: dict[str, list[NodeInfo]] = {}
    for name, root in groups:
        group, peers, _ = load_state(root)
        with DLedgerClient(format_peers(peers), group=group, timeout=args.timeout, tls=_tls_of(args),
                           token=_token_of(args)) as client:  # fmt: skip
            report[name] = client.status(timeout=min(args.timeout, 2.0))
    try:
        rows = broker_rows(fetch_cluster_info(namesrv, timeout=min(args.timeout, 3.0)))
        problem = ""
    except NamesrvStatusError as exc:
        rows, problem = [], str(exc)
    if args.json:
        out = {name: [asdict(n) for n in nodes] for name, nodes in report.items()}
        print(json.dumps({"groups": out, "namesrv": [r.to_json() for r in rows], "namesrv_error": problem}, indent=2))
    else:
        for name, nodes in report.items():
            print(f"broker group {name}\n{format_status_table(nodes)}\n")
        print(f"name server {namesrv}: " + (problem or f"\n{format_broker_table(rows)}"))
    answered = all(n.reachable for nodes in report.values() for n in nodes)
    return 0 if answered and not problem else 1


def _namesrv_status(args: argparse.Namespace) -> int:
    """The clusters and brokers a NameServer knows (see dledger/cli/namesrv_status.py); 1 when none answers."""
    try:
        rows = broker_rows(fetch_cluster_info(args.namesrv, timeout=min(args.timeout, 3.0)))
    except NamesrvStatusError as exc:
        print(f"dledger: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        print(format_broker_table(rows) if rows else "no broker is registered with the name server")
    return 0


def _leader(client: DLedgerClient, timeout: float) -> NodeInfo | None:
    return next((n for n in client.status(timeout=timeout) if n.reachable and n.role == "leader"), None)


def _cmd_transfer(args: argparse.Namespace) -> int:
    """Ask for the transfer, then report whether `--to` leads within `--timeout` (a transfer to the node
    that already leads is said so, not "started")."""
    with _client(args) as client:
        probe = min(args.timeout, 2.0)
        leader = _leader(client, probe)
        if leader is not None and leader.id == args.to:
            print(f"{args.to} already leads (term {leader.term}); nothing to transfer")
            return 0
        client.transfer_leadership(args.to)
        deadline = time.monotonic() + args.timeout
        while True:
            leader = _leader(client, probe)
            if leader is not None and leader.id == args.to:
                print(f"leadership moved to {args.to} (term {leader.term})")
                return 0
            if time.monotonic() >= deadline:
                now = f"{leader.id} leads" if leader is not None else "no leader is known"
                print(f"dledger: transfer to {args.to} asked for, but {now} after {args.timeout:g} s", file=sys.stderr)
                return 1
            time.sleep(0.05)


def format_members(members: tuple[Member, ...] | list[Member]) -> str:
    rows = [("ID", "ADDRESS", "ROLE")] + [(m.id, m.address or "-", "voter" if m.voter else "learner") for m in members]
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _cmd_member(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "list":
            members = client.members()
            if args.json:
                print(json.dumps([asdict(m) for m in members], indent=2))
            else:
                print(format_members(members))
            return 0
        if args.action == "add":
            if not args.address:
                raise ConfigError("member add needs --address host:port of the new node")
            result = client.add_learner(args.id, args.address)
        elif args.action == "promote":
            result = client.promote(args.id)
        else:
            result = client.remove(args.id)
    print(f"{args.action} {args.id}: committed at index {result.index}")
    print(format_members(result.members))
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.node not in client._route.peers:
            raise ConfigError(f"compact: {args.node!r} is not one of the peers {sorted(client._route.peers)}")
        first, snapshot = client.compact(args.node, args.before)
    print(f"{args.node}: log starts at {first}; latest snapshot at {snapshot or 'none'}")
    return 0


def add_client_commands(sub: Any) -> None:
    """Register the client commands on the top-level sub-parsers object."""
    p = sub.add_parser("append", help="append entries (arguments, or stdin as one entry)")
    _common(p)
    p.add_argument("data", nargs="*", help="entries to append (UTF-8); none: read one entry from stdin")
    p.set_defaults(func=_run(_cmd_append))

    p = sub.add_parser("get", help="print one committed entry")
    _common(p)
    p.add_argument("index", type=entry_index, help="the entry's index (1 and up)")
    p.add_argument("--raw", action="store_true", help="write the entry's bytes only")
    p.set_defaults(func=_run(_cmd_get))

    p = sub.add_parser("status", help="each node's role, term and indexes (or a NameServer's brokers)")
    _common(p)
    p.add_argument(
        "--namesrv",
        metavar="HOST:PORT",
        help="instead: the clusters, broker names, ids (0 = master) and addresses a NameServer knows",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run(_cmd_status))

    p = sub.add_parser("transfer-leader", help="move leadership to another node")
    _common(p)
    p.add_argument("--to", required=True, help="the id of the node that should lead")
    p.set_defaults(func=_run(_cmd_transfer))

    p = sub.add_parser("compact", help="drop a node's old log segments (a snapshot is taken first)")
    p.add_argument("node", help="the id of the node whose log to compact")
    p.add_argument("--before", type=int, default=0, help="compact below this index (default: as far as possible)")
    _common(p)
    p.set_defaults(func=_run(_cmd_compact))

    p = sub.add_parser("member", help="list or change the group's members (one change at a time)")
    p.add_argument(
        "action",
        choices=("list", "add", "promote", "remove"),
        help="list; add a learner (start its node with --join first); promote a caught-up learner; remove",
    )
    p.add_argument("id", nargs="?", default="", help="the node id (for add, promote, remove)")
    p.add_argument("--address", help="host:port of the node to add")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    _common(p)
    p.set_defaults(func=_run(_member_checked))


def _member_checked(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.id:
        raise ConfigError(f"member {args.action} needs a node id")
    if args.address is not None:
        parse_address(args.address, key="--address")
    return _cmd_member(args)
