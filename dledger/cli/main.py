"""The `dledger` command line: one sub-command per job, each registered by a small `add_*` function.

Invariant: a bad argument or a bad store gives a clear message and a non-zero exit code, never a traceback.
Exit codes: 0 ok, 1 the command ran and found a problem (e.g. a corrupt entry), 2 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from dledger import __version__
from dledger.cli.client import entry_index


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (`dledger get: error: ...`), exit 2;
    the sub-command parsers are of this class too (argparse makes them of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _store_problem(directory: str) -> str | None:
    """Why `directory` cannot be inspected as a commit log store, or None."""
    if not os.path.exists(directory):
        return f"{directory}: no such directory"
    if not os.path.isdir(directory):
        return f"{directory}: not a directory"
    if not os.path.isdir(os.path.join(directory, "data")):
        return f"{directory}: not a commit log store (no data/ directory)"
    if not os.access(directory, os.R_OK | os.X_OK) or not os.access(os.path.join(directory, "data"), os.R_OK):
        return f"{directory}: not readable"
    return None


def _resolve_store(args: argparse.Namespace) -> str | None:
    """Set `args.dir` from DIR or from a node's `--store-dir` (whose log lives in `log/`); the problem or None."""
    if args.store_dir and args.dir:
        return "give DIR or --store-dir, not both"
    if args.store_dir:
        args.dir = os.path.join(args.store_dir, "log")
    if not args.dir:
        return "give the log directory DIR, or a node's --store-dir"
    return _store_problem(args.dir)


def _log_verify(args: argparse.Namespace) -> int:
    from dledger.commitlog import CorruptStoreError, verify_store
    from dledger.commitlog.verify_state import check_hard_state, state_dir_beside

    problem = _resolve_store(args)
    if problem:
        print(f"dledger log verify: {problem}", file=sys.stderr)
        return 2
    try:
        report = verify_store(args.dir)
    except CorruptStoreError as exc:
        print(f"dledger log verify: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"dledger log verify: {exc}", file=sys.stderr)
        return 2
    for p in report.problems:
        print(f"BAD {p}")
    span = f"{report.first_index}..{report.last_index}"
    verdict = "clean" if report.clean else f"{len(report.problems)} problem(s)"
    print(f"{args.dir}: {report.segments} segment(s), {report.entries} entries ({span}): {verdict}")
    state_ok = True
    state_dir = os.path.join(args.store_dir, "state") if args.store_dir else state_dir_beside(args.dir)
    if state_dir is not None:
        # the node keeps the valid prefix: entries before the first problem
        valid_last = min([report.last_index, *((p.index - 1) for p in report.problems if p.index is not None)])
        state = check_hard_state(state_dir, report.first_index, valid_last)
        print(state.line)
        state_ok = state.ok
    return 0 if report.clean and state_ok else 1


def _preview(data: bytes, limit: int | None) -> str:
    shown = data if limit is None else data[:limit]
    text = repr(shown)[2:-1]
    return text + ("..." if limit is not None and len(data) > limit else "")


def _log_dump(args: argparse.Namespace) -> int:
    from dledger.commitlog import CorruptStoreError, Problem, dump_entries

    if args.to is not None and args.to < args.from_:
        print(f"dledger log dump: --to {args.to} is below --from {args.from_}", file=sys.stderr)
        return 2
    problem = _resolve_store(args)
    if problem:
        print(f"dledger log dump: {problem}", file=sys.stderr)
        return 2
    bad = shown = 0
    try:
        for item in dump_entries(args.dir, args.from_, None if args.to is None else args.to + 1):
            if isinstance(item, Problem):
                bad += 1
                print(f"BAD {item}")
            else:
                shown += 1
                data = _preview(item.data, None if args.full else 64)
                print(f"{item.index}\t{item.term}\t{item.kind.name}\t{len(item.data)}\t{data}")
        if not shown and not bad:
            print(f"dledger log dump: {_empty_range(args.dir, args.from_, args.to)}", file=sys.stderr)
            return 1
    except (CorruptStoreError, PermissionError) as exc:
        print(f"dledger log dump: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, CorruptStoreError) else 2
    return 1 if bad else 0


def _empty_range(directory: str, lo: int, hi: int | None) -> str:
    """Why `lo..hi` holds no entry: the log is empty, the range ends before its first entry, or it starts
    past its last (indexes are contiguous from the first, so only its first entry need be read)."""
    from dledger.commitlog import Problem, dump_entries

    first = next((e.index for e in dump_entries(directory, 0, None) if not isinstance(e, Problem)), None)
    wanted = f"{lo}..{'' if hi is None else hi}"
    if first is None:
        return f"no entries in {wanted}: the log is empty"
    if hi is not None and hi < first:
        return f"no entries in {wanted}: the log starts at {first}"
    return f"no entries in {wanted}: past the end of the log"


def add_log_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`dledger log verify DIR` and `dledger log dump DIR --from I --to J` (read-only; the store is not repaired)."""
    log = sub.add_parser("log", help="inspect a commit log store")
    log_sub = log.add_subparsers(dest="log_command", metavar="SUBCOMMAND")
    log_sub.required = True
    verify = log_sub.add_parser("verify", help="check every entry; exit 1 if anything is corrupt")
    verify.add_argument("dir", nargs="?", help="the log directory (holding data/ and index/)")
    verify.add_argument("--store-dir", help="a node's --store-dir (its log is STORE_DIR/log)")
    verify.set_defaults(func=_log_verify)
    dump = log_sub.add_parser("dump", help="print entries I..J (inclusive): index, term, kind, length, data")
    dump.add_argument("dir", nargs="?", help="the log directory (holding data/ and index/)")
    dump.add_argument("--store-dir", help="a node's --store-dir (its log is STORE_DIR/log)")
    dump.add_argument(
        "--from", dest="from_", type=entry_index, default=0, metavar="I", help="first index (default: the first)"
    )
    dump.add_argument("--to", type=entry_index, default=None, metavar="J", help="last index, inclusive (default: last)")
    dump.add_argument("--full", action="store_true", help="print whole bodies, not the first 64 bytes")
    dump.set_defaults(func=_log_dump)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dledger", description="A Raft-replicated commit log.")
    parser.add_argument("--version", action="version", version=f"dledger {__version__}")
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # each feature module adds its commands here
    from dledger.cli import admin
    from dledger.cli.bench import add_bench_commands
    from dledger.cli.broker import add_broker_command
    from dledger.cli.client import add_client_commands
    from dledger.cli.cluster import add_cluster_commands
    from dledger.cli.demo import add_demo_command
    from dledger.cli.node import add_node_commands
    from dledger.rocketmq.namesrv import cli as namesrv_cli

    add_demo_command(sub)
    add_node_commands(sub)
    add_broker_command(sub)
    admin.add_parser(sub)
    namesrv_cli.add_parser(sub)
    add_cluster_commands(sub)
    add_client_commands(sub)
    add_log_commands(sub)
    add_bench_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        print(f"dledger: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
