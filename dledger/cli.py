"""The `dledger` command line: one sub-command per job, each registered by a small `add_*` function.

Invariant: a bad argument or a bad store gives a clear message and a non-zero exit code, never a traceback.
Exit codes: 0 ok, 1 the command ran and found a problem (e.g. a corrupt entry), 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dledger import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dledger", description="A Raft-replicated commit log.")
    parser.add_argument("--version", action="version", version=f"dledger {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # each feature module adds its commands here
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
