"""Jepsen-style fault injection on real `dledger node` processes, with a history checker.

Run it as `python -m jepsen_like run | campaign | check REPORT_DIR | cleanup` (see `__main__`). Modules:
- `netns` (root: a network namespace per node, veth pairs into a bridge, nftables cuts) and `proxy` (the
  non-root fallback: a loopback TCP proxy per directed link); `cluster` runs the node processes on either;
- `nemesis`: faults with a start and a stop, and the seeded schedule; `workload`: the client processes;
  `broker_workload`: those of `--workload broker` (official RocketMQ client producers and consumers against
  `dledger broker` replicas);
- `history`: the JSONL invoke / ok / fail / info events; `checker`: the verdict; `broker_checker`: the
  verdict of a broker history; `replicas`: the healed replicas' committed logs compared byte for byte;
  `plots`: latency and rate PNGs with fault windows;
- `runner`: one run end to end; `campaign`: many runs and their summary; `procutil`: pids and the state
  file that `cleanup` uses.
Invariant for the whole package: it drives nodes only from outside (CLI, client, OS signals, files of a
stopped node), so what it observes is what a real deployment would see.
"""

from jepsen_like.broker_checker import check_broker
from jepsen_like.checker import Anomaly, Verdict, check
from jepsen_like.history import Event, HistoryWriter, Op, read_ops
from jepsen_like.runner import RunOptions, check_report, run

__all__ = [
    "Anomaly",
    "Event",
    "HistoryWriter",
    "Op",
    "RunOptions",
    "Verdict",
    "check",
    "check_broker",
    "check_report",
    "read_ops",
    "run",
]
