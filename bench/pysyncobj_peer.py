"""One PySyncObj replica for the end-to-end benchmark: a replicated append-only list of bytes.

Run by `bench/e2e.py` as N processes on loopback:

    python -m bench.pysyncobj_peer --self 127.0.0.1:P0 --partners 127.0.0.1:P1,127.0.0.1:P2 \
        --profile throughput|latency|failover [--journal FILE]

PySyncObj has no client protocol (a replicated method is called inside a replica's process), so the load is
generated inside the leader's process: that spares PySyncObj the client-to-leader network hop our clients
pay, which favours it. The controller talks to each peer with one JSON object per line on stdin; each answer
is one JSON line on stdout:
- `{"cmd": "status"}` -> `{"state", "leader", "term", "commit", "applied", "log_len", "self"}`;
- `{"cmd": "load", "payload", "batch", "inflight", "seconds", "max_ops"}` -> `{"ok", "entries", "seconds",
  "lat_ms": [...sample...], "errors"}` (only a leader runs it: items are appended through callbacks, with
  `inflight` calls outstanding; a batch of B is one call carrying B items);
- `{"cmd": "first_ack", "seconds"}` -> `{"t": monotonic time of the first acknowledged append}`;
- `{"cmd": "rss"}` -> `{"hwm_kb", "rss_kb"}`; `{"cmd": "quit"}` exits.

Settings (its best ones, per figure; see `PROFILES`): the memory journal for the async comparison; for the
sync one a file journal that is flushed (msync of the journal mapping) once before any message leaves the
process when entries were added since the last flush -- group commit, the cheapest way to make PySyncObj
acknowledge only durable entries (0.3.x has no per-entry fsync option). Log compaction is pushed out of the
run (it would pickle the whole list under load); dynamic membership is off. A "batch of 64" is 64 calls
issued together, which PySyncObj's own batching packs into append_entries messages: one call carrying a list
of 64 distinct items was far slower (such a command exceeds the 64 KiB batch size and goes in chunks; larger
batch sizes and socket buffers made it slower still on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

from bench.e2e_settings import COMMON, PROFILES
from dledger.node.tuning import tune_gc


class AppendLog(SyncObj):  # type: ignore[misc]  # untyped library
    """The replicated state: a list of byte strings."""

    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self.items: list[bytes] = []

    @replicated  # type: ignore[misc]
    def append(self, data: bytes) -> int:
        self.items.append(data)
        return len(self.items)

    @replicated  # type: ignore[misc]
    def append_batch(self, datas: list[bytes]) -> int:
        self.items.extend(datas)
        return len(self.items)


def _make_durable(obj: SyncObj) -> None:
    """Flush the file journal before anything leaves the process, if entries were added since the last flush."""
    journal = obj._SyncObj__raftLog
    transport = obj._SyncObj__transport
    dirty = [False]
    add, send = journal.add, transport.send

    def add_marked(*args: Any) -> None:
        add(*args)
        dirty[0] = True

    def send_flushed(*args: Any, **kwargs: Any) -> Any:
        if dirty[0]:
            dirty[0] = False
            journal.flush()
        return send(*args, **kwargs)

    journal.add = add_marked
    transport.send = send_flushed


def _status(obj: AppendLog) -> dict[str, Any]:
    s = obj.getStatus()
    leader = s.get("leader")
    return {
        "self": str(s["self"]),
        "state": int(s["state"]),
        "leader": str(leader) if leader is not None else None,
        "term": int(s["raft_term"]),
        "commit": int(s["commit_idx"]),
        "applied": int(s["last_applied"]),
        "log_len": int(s["log_len"]),
    }


def _rss() -> dict[str, int]:
    out = {"hwm_kb": 0, "rss_kb": 0}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                out["hwm_kb"] = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
    return out


def run_load(obj: AppendLog, payload: int, batch: int, inflight: int, seconds: float, max_ops: int) -> dict[str, Any]:
    """Keep `inflight` replicated calls outstanding for `seconds` (or `max_ops` calls); count acknowledged items."""
    data = os.urandom(payload)
    # distinct objects: pickle would write one object repeated in a list only once (a memo reference)
    items = [os.urandom(payload) for _ in range(batch)]
    sem = threading.Semaphore(inflight)
    lock = threading.Lock()
    done = {"ok": 0, "err": 0}
    lats: list[float] = []
    finished = threading.Event()
    outstanding = [0]

    def make_cb(t0: float) -> Callable[[Any, Any], None]:
        def cb(result: Any, error: Any) -> None:
            dt = time.perf_counter() - t0
            with lock:
                if error == 0:
                    done["ok"] += 1
                    if len(lats) < 200_000:
                        lats.append(dt)
                else:
                    done["err"] += 1
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    finished.set()
            sem.release()

        return cb

    start = time.perf_counter()
    deadline = start + seconds
    calls = 0
    while calls < max_ops:
        if not sem.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            break
        if time.perf_counter() >= deadline:
            sem.release()
            break
        with lock:
            outstanding[0] += 1
            finished.clear()
        t0 = time.perf_counter()
        if batch == 1:
            obj.append(data, callback=make_cb(t0))
        else:
            done_cb = make_cb(t0)
            left = [batch]
            failed = [0]

            def part(result: Any, error: Any, done_cb: Callable[[Any, Any], None] = done_cb,
                     left: list[int] = left, failed: list[int] = failed) -> None:  # fmt: skip
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                    if error != 0:
                        failed[0] += 1
                if last:
                    done_cb(None, 0 if failed[0] == 0 else 1)

            for item in items:
                obj.append(item, callback=part)
        calls += 1
    end_submit = time.perf_counter()
    with lock:
        pending = outstanding[0]
    if pending:
        finished.wait(timeout=10.0)
    elapsed = end_submit - start
    # count what was acknowledged within the window, rate over the window including the drain
    elapsed = max(elapsed, 1e-9)
    total = time.perf_counter() - start
    return {
        "ok": True,
        "calls_ok": done["ok"],
        "entries": done["ok"] * batch,
        "errors": done["err"],
        "seconds": total,
        "lat_ms": [x * 1000 for x in lats],
    }


def first_ack(obj: AppendLog, seconds: float) -> dict[str, Any]:
    """Append until one append is acknowledged (the probe after a leader was killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            obj.append(b"probe", sync=True, timeout=0.2)
            return {"t": time.monotonic()}
        except Exception:
            time.sleep(0.005)
    return {"t": None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--self", dest="self_addr", required=True)
    p.add_argument("--partners", required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), default="throughput")
    p.add_argument("--journal", default=None)
    args = p.parse_args(argv)
    conf_kwargs = {**COMMON, **PROFILES[args.profile]}
    if args.journal:
        conf_kwargs["journalFile"] = args.journal
    conf = SyncObjConf(**conf_kwargs)
    obj = AppendLog(args.self_addr, [x for x in args.partners.split(",") if x], conf)
    if args.journal:
        _make_durable(obj)
    tune_gc()  # the collector settings dledger's nodes run with, so neither side has a GC the other lacks
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        cmd = req.get("cmd")
        try:
            if cmd == "status":
                reply: dict[str, Any] = _status(obj)
            elif cmd == "load":
                reply = run_load(
                    obj, req["payload"], req["batch"], req["inflight"], req["seconds"], req.get("max_ops", 1 << 40)
                )
            elif cmd == "first_ack":
                reply = first_ack(obj, req["seconds"])
            elif cmd == "rss":
                reply = _rss()
            elif cmd == "quit":
                break
            else:
                reply = {"error": f"unknown command {cmd!r}"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    obj.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
