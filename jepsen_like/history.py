"""The history: JSONL events written by client processes, read back and paired into operations.

One event per line: `{"t": ns, "process": "c1.0", "type": "invoke"|"ok"|"fail"|"info", "f": "append"|"read",
"value": ..., ...}`. `t` is `time.monotonic_ns()`, which is one clock for every process on a Linux host, so
histories from several client processes merge by `t`. Invariants kept by `HistoryWriter` and relied on by
the checker:
- a process has at most one operation in flight: its `invoke` is followed by exactly one completion
  (`ok`, `fail` or `info`) of the same `f` before its next `invoke`;
- `fail` means the operation certainly did not take effect (a `NotWrittenError`, or a read);
- `info` means the outcome is unknown (a deadline after sending, a lost connection, anything unexpected):
  the operation may take effect at any time after its invoke, so it never completes in real time;
- a process that recorded `info` is never used again (the writer's user moves to a new process name).
An operation left without a completion at the end of a file (its client was killed) is read as `info`.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["INF", "Event", "HistoryWriter", "Op", "load_events", "pair_ops", "read_ops"]

INF = float("inf")
COMPLETIONS = ("ok", "fail", "info")


@dataclass(frozen=True, slots=True)
class Event:
    t: int
    process: str
    type: str
    f: str
    value: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"t": self.t, "process": self.process, "type": self.type, "f": self.f,
                           "value": self.value, **self.extra}, separators=(",", ":"))  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        core = {"t", "process", "type", "f", "value"}
        return cls(int(d["t"]), str(d["process"]), str(d["type"]), str(d["f"]), d.get("value"),
                   {k: v for k, v in d.items() if k not in core})  # fmt: skip


@dataclass(slots=True)
class Op:
    """One operation: its invoke and its completion. `end` is INF for `info` (it may still take effect)."""

    id: int
    process: str
    f: str
    value: Any
    type: str  # ok | fail | info
    start: int  # ns, invoke time
    end: float  # ns, completion time; INF when the outcome is unknown
    done: int | None  # ns when the client gave up or heard back (for latency plots), None if never
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> int | None:
        idx = self.result.get("index")
        return int(idx) if idx is not None else None

    def brief(self) -> dict[str, Any]:
        """A short, JSON-safe description used in anomaly reports."""
        out: dict[str, Any] = {"id": self.id, "process": self.process, "f": self.f, "type": self.type,
                               "value": self.value, "start_ns": self.start,
                               "end_ns": None if self.end == INF else int(self.end)}  # fmt: skip
        for key in ("index", "term", "read_index", "node", "via", "msg_id", "queue", "offset", "error"):
            if key in self.result:
                out[key] = self.result[key]
        return out


class HistoryWriter:
    """Appends events to a JSONL file, one line per event, flushed at once (a killed client loses nothing
    it recorded). Thread-safe."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, process: str, type_: str, f: str, value: Any = None, **extra: Any) -> int:
        t = time.monotonic_ns()
        line = Event(t, process, type_, f, value, extra).to_json()
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
        return t

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load_events(paths: Iterable[str | pathlib.Path]) -> list[Event]:
    """Every event of every file, merged by time (a torn last line of a killed writer is skipped)."""
    events: list[Event] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    events.append(Event.from_dict(json.loads(line)))
                except (ValueError, KeyError):
                    continue
    events.sort(key=lambda e: (e.t, e.type != "invoke"))
    return events


def pair_ops(events: Iterable[Event]) -> list[Op]:
    """Pair each invoke with its process's next completion; an unmatched invoke becomes `info`."""
    pending: dict[str, Op] = {}
    ops: list[Op] = []
    for e in events:
        if e.type == "invoke":
            if e.process in pending:  # a second invoke without completion: the first is unknown
                pending.pop(e.process).type = "info"
            op = Op(len(ops), e.process, e.f, e.value, "info", e.t, INF, None)
            ops.append(op)
            pending[e.process] = op
        elif e.type in COMPLETIONS:
            op_or_none = pending.pop(e.process, None)
            if op_or_none is None:
                continue
            op_or_none.type = e.type
            op_or_none.done = e.t
            op_or_none.end = e.t if e.type != "info" else INF
            op_or_none.result = dict(e.extra)
    return ops


def read_ops(paths: Iterable[str | pathlib.Path]) -> list[Op]:
    return pair_ops(load_events(paths))


def iter_jsonl(path: str | pathlib.Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
