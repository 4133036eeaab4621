"""`python -m jepsen_like run | campaign | check REPORT_DIR | cleanup`.

Exit codes: 0 valid (or cleanup done), 1 an anomaly was found (or the run could not complete), 2 usage.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="replay a run: the schedule and workload come from this seed")
    p.add_argument("--workload", choices=("log", "broker"), default="log",
                   help="log: append and read on dledger nodes; broker: RocketMQ on dledger brokers")  # fmt: skip
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument(
        "--nemesis",
        default="kill,pause,partition",
        help="comma-separated nemeses or groups (kill, pause, partition, member, all); '' for none",
    )
    p.add_argument("--clients", type=int, default=3, help="client processes")
    p.add_argument("--threads", type=int, default=2, help="workers per client process")
    p.add_argument("--flush", choices=("sync", "async"), default="sync")
    p.add_argument("--lease-read", action="store_true", help="run the nodes with lease reads (for clock-skew)")
    p.add_argument("--read-fraction", type=float, default=0.25)
    p.add_argument("--recovery", type=float, default=5.0, help="seconds of workload after healing")
    p.add_argument("--drain", type=float, default=60.0, help="broker: longest final drain of the consumers (s)")
    p.add_argument("--net", choices=("auto", "netns", "proxy"), default="auto")
    p.add_argument("--peer-transport", choices=("grpc", "tcp"), default="grpc", help="how nodes replicate")
    p.add_argument("--overlap", action="store_true", help="let a process fault and a network fault overlap")
    p.add_argument("--no-plots", action="store_true")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so every run's `finally` tears down what it made


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    parser = argparse.ArgumentParser(prog="python -m jepsen_like", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one run: faults for --duration seconds, then heal and check")
    _add_run_args(run_p)
    run_p.add_argument("--duration", type=float, default=60.0)
    run_p.add_argument("--out", help="report directory (default /tmp/jepsen_like/reports/<time>-<seed>)")
    camp = sub.add_parser("campaign", help="many runs, every nemesis, until --minutes are used")
    camp.add_argument("--minutes", type=float, default=30.0)
    camp.add_argument("--seed", type=int, help="the campaign's seed (each run's seed is drawn from it)")
    camp.add_argument("--short", action="store_true",
                      help="the CI campaign: 5 runs (kill, pause, partition, membership, compaction)")  # fmt: skip
    camp.add_argument("--with-broker", action="store_true",
                      help="also the broker workload: one kill-leader run with --short, broker plans in the rotation "
                           "otherwise")  # fmt: skip
    camp.add_argument("--broker-only", action="store_true", help="only the broker workload's runs")
    camp.add_argument("--membership-only", action="store_true",
                      help="only the membership-change runs (with --short: one run)")  # fmt: skip
    camp.add_argument("--compaction-only", action="store_true",
                      help="only the compaction runs (catching up by snapshot; with --short: one run)")  # fmt: skip
    camp.add_argument("--run-seconds", type=float, default=60.0, help="fault phase of each run")
    camp.add_argument("--net", choices=("auto", "netns", "proxy"), default="auto")
    camp.add_argument("--peer-transport", choices=("grpc", "tcp"), default="grpc", help="how nodes replicate")
    camp.add_argument("--out", help="campaign directory (default /tmp/jepsen_like/campaigns/<time>)")
    chk = sub.add_parser("check", help="re-check a report directory (exit 0 iff valid)")
    chk.add_argument("report")
    chk.add_argument("--no-plots", action="store_true")
    clean = sub.add_parser("cleanup", help="remove namespaces, links and processes left by interrupted runs")
    clean.add_argument("--force", action="store_true", help="also those of runs that are still going")
    args = parser.parse_args(argv)

    if args.command == "cleanup":
        from jepsen_like.netns import cleanup_all

        done = cleanup_all(force=args.force)
        print("\n".join(done) if done else "nothing to clean up")
        return 0
    if args.command == "check":
        from jepsen_like.runner import check_report

        report = pathlib.Path(args.report)
        if not (report / "history").is_dir():
            print(f"jepsen_like check: {report} is not a report directory (no history/)", file=sys.stderr)
            return 2
        return 0 if check_report(report, plots=not args.no_plots).valid else 1
    if args.command == "run":
        from jepsen_like.runner import RunOptions, run

        opts = RunOptions(seed=args.seed, nodes=args.nodes, duration=args.duration,
                          nemeses=[n for n in args.nemesis.split(",") if n], clients=args.clients,
                          threads=args.threads, flush=args.flush, lease_read=args.lease_read,
                          read_fraction=args.read_fraction, recovery=args.recovery, net=args.net, out=args.out,
                          plots=not args.no_plots, overlap=args.overlap, workload=args.workload,
                          drain=args.drain, peer_transport=args.peer_transport)  # fmt: skip
        try:
            return run(opts)
        except Exception as exc:  # the run could not complete (e.g. no leader at start): say so, exit 1
            print(f"jepsen_like run: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    from jepsen_like.campaign import campaign

    return campaign(minutes=args.minutes, seed=args.seed, short=args.short, run_seconds=args.run_seconds,
                    net=args.net, out=args.out, with_broker=args.with_broker,
                    broker_only=args.broker_only, membership_only=args.membership_only,
                    compaction_only=args.compaction_only, peer_transport=args.peer_transport)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
