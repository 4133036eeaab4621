"""The checker: decides whether a history (plus the healed replicas' logs) is valid for an append-only log.

No search is needed: every append that took effect has one index, so the history defines one candidate
total order (index -> entry) and each property is a direct check against it. Anomalies (each names the
operations involved):
- `divergent`: two observations of the same index disagree (two reads, a read and an acknowledgement, two
  acknowledgements, the final log or an archive of compacted segments): reads are not prefixes of one total
  order;
- `duplicate`: one appended value sits at two indexes;
- `phantom`: a value that no append ever wrote;
- `aborted-read`: a value whose append definitely failed (`fail`) is in the log;
- `lost-write`: an acknowledged append is missing from where it must be: the final (healed) log on the range
  its replicas hold, or, below it, the archive of what compaction dropped (`final["archived"]`, see
  `compaction.py`: each record holds entries committed when they were dropped). An acknowledged append at an
  index neither covers (dropped by a snapshot install, or by a replica that is no final member, before any
  archive reached it) is counted as `appends_unverifiable` unless a read saw it there: never assumed lost;
- `realtime-order`: append A completed before append B was invoked, but A's index is not below B's;
- `stale-read`: a read invoked after append A completed returned a read index below A's index;
- `nonmonotonic-read`: a read invoked after another read completed returned a lower read index;
- `lost-change`: a membership change acknowledged as committed (from the nemesis timeline: its index and
  the configuration after it) is not that CONFIG entry in the final (healed) log;
- `replica-mismatch`: the replicas' committed logs are not byte-identical, or `dledger log verify` failed;
- `unhealed`: the cluster never converged after healing, so lost writes could not be checked.
Invariant: `check` only reads its inputs; the verdict is valid iff no anomaly was found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jepsen_like.history import INF, Op

__all__ = ["Anomaly", "Report", "Verdict", "check", "check_final"]

MAX_PER_KIND = 25  # anomalies kept in full per kind; the rest are only counted
NOOP_KIND = 1
CONFIG_KIND = 2  # a membership change: written by the leader, not by an append

Observed = tuple[int, int, str]  # (term, kind, data) seen at an index


@dataclass(slots=True)
class Anomaly:
    kind: str
    message: str
    ops: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "ops": self.ops}


@dataclass(slots=True)
class Verdict:
    valid: bool
    anomalies: list[Anomaly]
    counts: dict[str, int]
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "counts": self.counts, "stats": self.stats,
                "anomalies": [a.to_dict() for a in self.anomalies]}  # fmt: skip


class Report:
    def __init__(self) -> None:
        self.anomalies: list[Anomaly] = []
        self.counts: dict[str, int] = {}

    def add(self, kind: str, message: str, ops: Iterable[Op | None] = ()) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= MAX_PER_KIND:
            self.anomalies.append(Anomaly(kind, message, [o.brief() for o in ops if o is not None]))

    def verdict(self, stats: dict[str, Any]) -> Verdict:
        return Verdict(not self.counts, self.anomalies, dict(sorted(self.counts.items())), stats)


def _observed(raw: Sequence[Any]) -> Observed:
    return int(raw[0]), int(raw[1]), str(raw[2])


def check(ops: Sequence[Op], final: dict[str, Any] | None = None,
          changes: Sequence[Mapping[str, Any]] = ()) -> Verdict:  # fmt: skip
    """Check `ops` (paired history) and `final` (see `replicas.final_state`; None: no final state known);
    `changes`: the membership changes acknowledged as committed, `{"op", "node", "index", "voters",
    "learners"}` (the configuration after the change)."""
    rep = Report()
    appends = [o for o in ops if o.f == "append"]
    reads = [o for o in ops if o.f == "read" and o.type == "ok"]
    by_value: dict[str, Op] = {}
    for o in appends:
        by_value.setdefault(str(o.value), o)

    # 1. one total order: index -> (observation, who saw it)
    order: dict[int, tuple[Observed, Op | None, str]] = {}

    def observe(index: int, obs: Observed, op: Op | None, source: str, data_only: bool = False) -> None:
        seen = order.get(index)
        if seen is None:
            order[index] = (obs, op, source)
            return
        prev, prev_op, prev_source = seen
        same = prev[2] == obs[2] if data_only else prev == obs
        if not same:
            rep.add("divergent", f"index {index}: {prev_source} saw {prev!r} but {source} saw {obs!r}", (prev_op, op))

    if final and final.get("entries"):
        for raw in final["entries"]:
            observe(int(raw[0]), _observed(raw[1:]), None, "the final log")
    archived: set[int] = set()
    for raw in (final or {}).get("archived", []):
        observe(int(raw[0]), _observed(raw[1:4]), None, f"the compacted segments archived as {raw[4]}")
        archived.add(int(raw[0]))
    read_seen: dict[int, str] = {}
    for o in reads:
        for idx_text, raw in (o.result.get("entries") or {}).items():
            observe(int(idx_text), _observed(raw), o, f"read op {o.id}")
            read_seen[int(idx_text)] = str(raw[2])
    for o in appends:
        if o.type == "ok" and o.index is not None:
            observe(o.index, (int(o.result.get("term", 0)), 0, str(o.value)), o, f"append op {o.id} (acked)", True)

    # 2. values in the order: written once, by an append that did not fail
    position: dict[str, int] = {}
    for index in sorted(order):
        (_, kind, data), op, source = order[index]
        if kind in (NOOP_KIND, CONFIG_KIND):
            continue
        writer = by_value.get(data)
        if writer is None:
            rep.add("phantom", f"index {index} holds {data!r}, which no append wrote ({source})", (op,))
            continue
        if writer.type == "fail":
            rep.add("aborted-read", f"index {index} holds {data!r}, whose append failed ({source})", (writer, op))
        if data in position:
            rep.add("duplicate", f"{data!r} is at index {position[data]} and at index {index}", (writer, op))
        else:
            position[data] = index

    # 3. acknowledged appends survive healing (and compaction)
    unverifiable = 0
    if final is not None and check_final(rep, final):
        common = int(final.get("common_index", 0))
        first = int(final.get("first_index", 1))  # > 1 only if every compared replica's log was compacted or reset
        final_index = {int(raw[0]): str(raw[3]) for raw in final.get("entries", [])}
        for raw in final.get("archived", []):
            final_index.setdefault(int(raw[0]), str(raw[3]))
        for o in appends:
            if o.type != "ok" or o.index is None:
                continue
            if o.index < first and o.index not in archived:
                unverifiable += read_seen.get(o.index) != str(o.value)
                continue
            if (o.index > common and o.index not in archived) or final_index.get(o.index) != str(o.value):
                rep.add("lost-write", f"acknowledged append {o.value!r} at index {o.index} is not in the "
                        f"final log (committed up to {common})", (o,))  # fmt: skip
        _check_changes(rep, changes, final, first, common)

    # 4. real time: appends, and reads against appends and earlier reads
    indexed = []  # (start, end, index, op) for appends whose index is known
    for o in appends:
        idx = o.index if o.type == "ok" and o.index is not None else position.get(str(o.value))
        if idx is not None:
            indexed.append((o.start, o.end, idx, o))
    _realtime_sweep(rep, indexed, indexed, "realtime-order",
                    lambda a, b: f"append {a.value!r} (index {_ix(a, position)}) completed before append "
                                 f"{b.value!r} began, but got index {_ix(b, position)}",
                    lambda a_idx, b_idx: a_idx >= b_idx)  # fmt: skip
    read_points = [(o.start, o.end, int(o.result.get("read_index", 0)), o) for o in reads]
    acked = [(s, e, i, o) for (s, e, i, o) in indexed if o.type == "ok"]
    _realtime_sweep(rep, acked, read_points, "stale-read",
                    lambda a, b: f"read {b.id} began after append {a.value!r} (index {a.index}) completed, "
                                 f"but read index {b.result.get('read_index')}",
                    lambda a_idx, b_idx: a_idx > b_idx)  # fmt: skip
    _realtime_sweep(rep, read_points, read_points, "nonmonotonic-read",
                    lambda a, b: f"read {b.id} began after read {a.id} (read index {a.result.get('read_index')}) "
                                 f"completed, but read index {b.result.get('read_index')}",
                    lambda a_idx, b_idx: a_idx > b_idx)  # fmt: skip

    stats = {
        "ops": len(ops),
        "appends": len(appends),
        "appends_ok": sum(o.type == "ok" for o in appends),
        "appends_fail": sum(o.type == "fail" for o in appends),
        "appends_info": sum(o.type == "info" for o in appends),
        "info_appends_committed": sum(o.type == "info" and str(o.value) in position for o in appends),
        "reads": sum(o.f == "read" for o in ops),
        "reads_ok": len(reads),
        "indexes_observed": len(order),
        "config_entries": sum(obs[1] == CONFIG_KIND for obs, _, _ in order.values()),
        "changes_ok": len(changes),
        "archived_entries": len(archived),
        "appends_unverifiable": unverifiable,
        "reads_compacted": sum(len(o.result.get("compacted") or []) for o in reads),
        "final_common_index": None if final is None else final.get("common_index"),
    }
    return rep.verdict(stats)


def check_final(rep: Report, final: dict[str, Any]) -> bool:
    """Add `unhealed` and `replica-mismatch` anomalies from a final state; whether the cluster healed."""
    healed = bool(final.get("healed", False))
    if not healed:
        rep.add("unhealed", f"the cluster did not converge after healing: {final.get('problems')}")
    for problem in final.get("replica_problems", []):
        rep.add("replica-mismatch", str(problem))
    return healed


def _check_changes(rep: Report, changes: Sequence[Mapping[str, Any]], final: dict[str, Any], first: int,
                   common: int) -> None:  # fmt: skip
    entries = {int(raw[0]): raw for raw in final.get("entries", [])}
    archived = {int(raw[0]): raw[:4] for raw in final.get("archived", [])}
    for c in changes:
        index = int(c["index"])
        if index < first:  # compacted on every final member: checked against the archive when it holds it
            if index not in archived:
                continue
            raw = archived[index]
        else:
            raw = entries.get(index)
        what = f"{c['op']} {c['node']} acknowledged at index {index}"
        if (index > common and index not in archived) or raw is None or int(raw[2]) != CONFIG_KIND:
            rep.add("lost-change", f"{what} is not a CONFIG entry of the final log (committed up to {common}): {raw}")
            continue
        try:
            config = json.loads(str(raw[3]))
            got = (sorted(config["voters"]), sorted(config["learners"]))
        except (ValueError, KeyError, TypeError):
            got = None  # an encoding this checker does not read: only the entry's kind is checked
        if got is not None and got != (sorted(c["voters"]), sorted(c["learners"])):
            rep.add("lost-change", f"{what}: the final log's CONFIG entry there holds voters {got[0]}, learners "
                                   f"{got[1]}, not {c['voters']}, {c['learners']}")  # fmt: skip


def _ix(op: Op, position: dict[str, int]) -> int | None:
    return op.index if op.index is not None else position.get(str(op.value))


Point = tuple[int, float, int, Op]


def _realtime_sweep(rep: Report, before: list[Point], after: list[Point], kind: str, describe: Any,
                    bad: Any) -> None:  # fmt: skip
    """For each `b` in `after`, compare with the `a` in `before` of highest index that completed before `b`
    was invoked; `bad(a_index, b_index)` flags an anomaly."""
    finished = sorted((p for p in before if p[1] != INF), key=lambda p: p[1])
    k = 0
    best: Point | None = None
    for b in sorted(after, key=lambda p: p[0]):
        while k < len(finished) and finished[k][1] < b[0]:
            if best is None or finished[k][2] > best[2]:
                best = finished[k]
            k += 1
        if best is not None and best[3] is not b[3] and bad(best[2], b[2]):
            rep.add(kind, describe(best[3], b[3]), (best[3], b[3]))
