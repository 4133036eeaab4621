"""`dledger bench storage|e2e|broker`: the benchmarks, which live in the `bench/` folder of a source tree, not in
the installed package.

Invariant: this command never edits `sys.path`. Where `bench` is importable (`python -m dledger bench ...`
run from the root of a clone, whose directory Python puts on the path), it runs; elsewhere it says in one
line how to run it from a clone, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType

__all__ = ["FROM_A_CLONE", "add_bench_commands"]

FROM_A_CLONE = (
    "the benchmarks ship with the source tree, not the package: from the root of a clone, after"
    " `pip install -e '.[bench]'`, run `python -m dledger bench ...` (docs/benchmarks.md)"
)


def _import_bench(name: str) -> ModuleType | None:
    """`bench.<name>` where it is importable, else None."""
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError as exc:
        if exc.name not in ("bench", f"bench.{name}"):
            raise  # the benchmark is there but something it needs is not: say so
        return None


def _not_here(what: str) -> int:
    print(f"dledger bench {what}: {FROM_A_CLONE}", file=sys.stderr)
    return 2


def _bench_storage(args: argparse.Namespace) -> int:
    module = _import_bench("storage")
    if module is None:
        return _not_here("storage")
    return int(module.run(quick=args.quick, json_path=args.json, directory=args.dir))


def _bench_broker(args: argparse.Namespace) -> int:
    module = _import_bench("broker_groups")
    if module is None:
        return _not_here("broker")
    if importlib.util.find_spec("rocketmq") is None:  # the load processes are official RocketMQ 5 clients
        print("dledger bench broker: needs the official RocketMQ client: pip install -e '.[rocketmq]'", file=sys.stderr)
        return 2
    return int(module.run(args.groups, args.seconds, args.rounds, args.window, args.size, args.json))


def add_bench_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`dledger bench storage [--quick] [--json PATH] [--dir DIR]`, `dledger bench e2e ...` and `dledger bench
    broker [--groups N] ...`."""
    bench = sub.add_parser("bench", help="benchmarks (from a clone of the source tree)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    bench_sub.required = True
    storage = bench_sub.add_parser("storage", help="commit log append/read/reopen throughput vs plain os.write")
    storage.add_argument("--quick", action="store_true", help="a smaller run (< 30 s)")
    storage.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    storage.add_argument("--dir", metavar="DIR", help="where to make the scratch dir (default /tmp)")
    storage.set_defaults(func=_bench_storage)
    broker = bench_sub.add_parser("broker", help="produce throughput of a NameServer cluster with 1 .. N broker groups")
    broker.add_argument("--groups", type=int, default=2, help="broker groups; rounds drive 1 .. N of them (default 2)")
    broker.add_argument("--seconds", type=float, default=10.0, help="seconds of sending per round (default 10)")
    broker.add_argument("--rounds", type=int, default=3, help="rounds per number of groups driven (default 3)")
    broker.add_argument("--window", type=int, default=256, help="async sends in flight per load process")
    broker.add_argument("--size", type=int, default=1024, help="message body bytes")
    broker.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    broker.set_defaults(func=_bench_broker)
    e2e = _import_bench("e2e")
    if e2e is not None:  # a group of node processes beside PySyncObj (the `bench` extra)
        e2e.add_e2e_bench_command(bench_sub)
    else:
        # whatever follows is taken as it is (no option is known here), so the answer is the line below
        e2e_parser = bench_sub.add_parser(
            "e2e", help="a group of node processes beside PySyncObj (from a clone)", add_help=False, prefix_chars="\0"
        )
        e2e_parser.add_argument("rest", nargs="*")
        e2e_parser.set_defaults(func=lambda args: _not_here("e2e"))
