"""PNG plots of a run, like Jepsen's latency-raw and rate plots, with the fault windows shaded.

`latency-raw.png`: one point per completed operation at (invoke time, latency), coloured by outcome
(ok / fail / info), marker by function (append / read, or send / receive / ack for the broker workload);
`rate.png`: completions per second per (function, outcome). Times are seconds since the first event; a fault
window is the span between a nemesis's start and its stop in `nemesis.jsonl` (one colour per nemesis,
labelled once). Needs matplotlib (imported here only, so the rest of the package works without it).
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from collections.abc import Sequence

from jepsen_like.history import Op

__all__ = ["fault_windows", "plot_report"]

OUTCOME_COLOURS = {"ok": "#2a9d3f", "fail": "#d62728", "info": "#ff9f1c"}
MARKERS = {"append": "o", "read": "^", "send": "o", "receive": "^", "ack": "s"}
LINES = {"append": "-", "read": "--", "send": "-", "receive": "--", "ack": ":"}


def fault_windows(report: pathlib.Path) -> list[tuple[str, int, int | None]]:
    """(nemesis, start ns, stop ns or None if never stopped) from the timeline."""
    windows: list[tuple[str, int, int | None]] = []
    open_: dict[str, int] = {}
    path = report / "nemesis.jsonl"
    if not path.exists():
        return windows
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "start" and "skipped" not in e["detail"]:
            open_[e["nemesis"]] = int(e["t"])
        elif e["type"] == "stop" and e["nemesis"] in open_:
            windows.append((e["nemesis"], open_.pop(e["nemesis"]), int(e["t"])))
    windows.extend((name, t, None) for name, t in open_.items())
    return windows


def plot_report(report: pathlib.Path, ops: Sequence[Op]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not ops:
        return
    t0 = min(o.start for o in ops)
    t_end = max((o.done or o.start) for o in ops)
    windows = fault_windows(report)

    def shade(ax: object) -> None:
        cmap = plt.get_cmap("tab10")
        names = sorted({w[0] for w in windows})
        seen: set[str] = set()
        for name, start, stop in windows:
            colour = cmap(names.index(name) % 10)
            label = None if name in seen else name
            seen.add(name)
            ax.axvspan((start - t0) / 1e9, ((stop or t_end) - t0) / 1e9, color=colour, alpha=0.15,  # type: ignore[attr-defined]
                       label=label, linewidth=0)  # fmt: skip

    fig, ax = plt.subplots(figsize=(12, 5))
    shade(ax)
    for f, marker in MARKERS.items():
        if not any(o.f == f for o in ops):
            continue
        for outcome, colour in OUTCOME_COLOURS.items():
            pts = [o for o in ops if o.f == f and o.type == outcome and o.done is not None]
            if pts:
                ax.scatter([(o.start - t0) / 1e9 for o in pts], [max((o.done or 0) - o.start, 1) / 1e6 for o in pts],
                           s=6, marker=marker, color=colour, alpha=0.6, label=f"{f} {outcome}")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"latency-raw: {report.name}")
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(report / "latency-raw.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 5))
    shade(ax)
    buckets: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for o in ops:
        if o.done is not None:
            buckets[(o.f, o.type)][int((o.done - t0) / 1e9)] += 1
    span = int((t_end - t0) / 1e9) + 1
    for (f, outcome), counts in sorted(buckets.items()):
        xs = list(range(span))
        ax.plot(xs, [counts.get(x, 0) for x in xs], color=OUTCOME_COLOURS.get(outcome, "k"),
                linestyle=LINES.get(f, "-."), label=f"{f} {outcome}", linewidth=1)  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.set_ylabel("operations / s")
    ax.set_title(f"rate: {report.name}")
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(report / "rate.png", dpi=110)
    plt.close(fig)
