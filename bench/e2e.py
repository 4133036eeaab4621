"""End-to-end benchmark: a dledger group against PySyncObj, same machine, same run, same workloads.

Run with `dledger bench e2e [--quick] [--nodes 3|5] [--json PATH]` or `python -m bench.e2e ...`.

For each system it starts N replicas as separate processes on loopback (fresh stores in a temp dir), then:
- throughput with many appends in flight: single appends (one entry per request) and batches of 64, for
  payloads of 100 B, 1 KiB, 16 KiB and 64 KiB, with flush async (PySyncObj: memory journal) and sync
  (PySyncObj: file journal flushed before anything is sent). dledger is driven by separate client processes
  over gRPC; PySyncObj, which has no client protocol, by callbacks inside its leader's process;
- latency of one synchronous client (1 KiB, async flush): p50 / p99 / max; dledger's both from a client
  process and from inside its leader's process (`bench.embedded_node`), the way PySyncObj's load runs;
- failover: SIGKILL of the leader -> first acknowledged append (median and max of several kills);
- follower catch-up: a follower is killed, 1 GiB (16 MiB with --quick) is appended, the follower restarts,
  and its MB/s from the restart (start-up and recovery included) until it holds everything is measured;
- leader changes (term increases) during each run, and each node's peak RSS.
Each figure is the median of several runs (one with --quick); the table prints ours beside PySyncObj's and
the ratio, the JSON goes to bench/results/ (and --json PATH), and a PNG plots throughput against payload.
Timing goals live here, never in tests. Every process and temp dir is cleaned up in `finally`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bench.e2e_settings import COMMON, PROFILES

if TYPE_CHECKING:  # the groups import grpc and the client: loaded by `run`, so that the CLI hook stays light
    from bench.e2e_groups import DledgerGroup, PysyncobjGroup

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
KiB = 1024
MiB = 1 << 20


@dataclass
class Profile:
    seconds: float  # per throughput run
    runs: int  # runs per figure (median reported)
    payloads: tuple[int, ...]
    sync_payloads: tuple[int, ...]
    latency_ops: int
    failovers: int
    catchup_bytes: int
    soak_seconds: float  # full-load run in which leader changes are counted (0: skip)
    max_bytes_per_run: int = 256 * MiB  # payload bytes per throughput run at most (disk and PySyncObj RAM)
    group_per_payload: bool = False  # one group for both batch sizes of a payload (quick: saves start-ups)


QUICK = Profile(
    seconds=2.0,
    runs=1,
    payloads=(100, 1 * KiB, 16 * KiB),
    sync_payloads=(1 * KiB,),
    latency_ops=300,
    failovers=2,
    catchup_bytes=16 * MiB,
    soak_seconds=0,
    group_per_payload=True,
)
FULL = Profile(
    seconds=5.0,
    runs=3,
    payloads=(100, 1 * KiB, 16 * KiB, 64 * KiB),
    sync_payloads=(100, 1 * KiB, 16 * KiB, 64 * KiB),
    latency_ops=2000,
    failovers=7,
    catchup_bytes=1 << 30,
    soak_seconds=60,
)
BATCHES = (1, 64)
SYSTEMS = ("dledger", "pysyncobj")
MISSING_PYSYNCOBJ = (
    "PySyncObj, the system this benchmark compares against, is not installed: "
    "pip install 'dledger[bench]' (or run with --dledger-only)"
)


def pysyncobj_missing() -> bool:
    """True when the `bench` extra (PySyncObj) is not importable: its peers would exit at once."""
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return True
    return False


@dataclass
class Figure:
    """One measured figure for both systems (medians over runs) and the ratio ours / theirs."""

    key: str
    unit: str
    ours: float | None
    theirs: float | None
    ours_runs: list[float] = field(default_factory=list)
    theirs_runs: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.theirs:
            return None
        return self.ours / self.theirs if self.higher_is_better else self.theirs / self.ours


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _inflight(payload: int, batch: int) -> int:
    """Requests in flight (the same for both systems): many, but at most ~16 MiB of payload outstanding.
    Batches of 64 get 64 requests (4,096 entries): with 16, a 1 KiB run measures the client's round trip more
    than the replication path (fewer entries/s than with 64)."""
    return max(2, min(256 if batch == 1 else 64, (16 * MiB) // (payload * batch)))


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(
        self, profile: Profile, nodes: int, scratch: pathlib.Path, clients: int, systems: tuple[str, ...] = SYSTEMS
    ) -> None:
        self.p = profile
        self.systems = systems
        self.nodes = nodes
        self.scratch = scratch
        self.clients = clients
        self.figures: dict[str, Figure] = {}
        self.rss: dict[str, dict[str, float]] = {"dledger": {}, "pysyncobj": {}}
        self.elections: dict[str, dict[str, int]] = {"dledger": {}, "pysyncobj": {}}
        self.cpu: dict[str, dict[str, dict[str, float]]] = {"dledger": {}, "pysyncobj": {}}
        self._n = 0

    def _dir(self, name: str) -> pathlib.Path:
        self._n += 1
        d = self.scratch / f"{self._n:02d}-{name}"
        d.mkdir(parents=True)
        return d

    @contextmanager
    def group(self, system: str, flush: str, profile: str = "throughput", embedded: bool = False) -> Iterator[Any]:
        from bench.e2e_groups import DledgerGroup, PysyncobjGroup

        d = self._dir(f"{system}-{flush}-{profile}")
        g: Any = (
            DledgerGroup(d, self.nodes, flush, embedded=embedded)
            if system == "dledger"
            else PysyncobjGroup(d, self.nodes, flush, profile)
        )
        try:
            g.start()
            g.wait_ready(30.0)
            yield g
        finally:
            try:
                g.stop()
            finally:
                rss = self.rss[system]
                for node, mb in g.rss_mb.items():
                    key = f"{flush}/{profile}/{node}"
                    rss[key] = max(rss.get(key, 0.0), mb)
                shutil.rmtree(d, ignore_errors=True)

    def record(self, key: str, unit: str, system: str, value: float | None, higher: bool = True) -> None:
        fig = self.figures.setdefault(key, Figure(key, unit, None, None, higher_is_better=higher))
        if value is None:
            return
        runs = fig.ours_runs if system == "dledger" else fig.theirs_runs
        runs.append(value)
        med = _median(runs)
        if system == "dledger":
            fig.ours = med
        else:
            fig.theirs = med

    # ---- scenarios ----
    def throughput(self, system: str, flush: str) -> None:
        payloads = self.p.payloads if flush == "async" else self.p.sync_payloads
        for payload in payloads:
            # a fresh group per case (full profile): PySyncObj keeps its whole log, and the list, in memory
            cases = [BATCHES] if self.p.group_per_payload else [(b,) for b in BATCHES]
            for batches in cases:
                with self.group(system, flush) as g:
                    for batch in batches:
                        for run in range(self.p.runs):
                            inflight = _inflight(payload, batch)
                            max_ops = max(1, self.p.max_bytes_per_run // (payload * batch))
                            key = f"throughput {flush} {_size(payload)} x{batch}"
                            term0 = g.term()
                            try:
                                r = g.load(payload, batch, inflight, self.p.seconds, max_ops, self.clients)
                            except Exception as exc:  # a failed run must not lose the other cases
                                _progress(f"!! {system} {key} run {run} failed: {type(exc).__name__}: {exc!s:.300}")
                                self.elections[system][f"{key} run {run}"] = g.term() - term0
                                continue
                            elections = g.term() - term0
                            rate = r["entries"] / r["seconds"] if r["seconds"] > 0 else 0.0
                            self.record(key, "entries/s", system, rate)
                            self.elections[system][f"{key} run {run}"] = elections
                            cpu = r["cpu_s"]
                            n = max(1, r["entries"])
                            us = {k: v * 1e6 / n for k, v in cpu.items()}
                            self.cpu[system][f"{key} run {run}"] = us
                            _progress(
                                f"{system:9s} {key}: {rate:,.0f} entries/s ({rate * payload / MiB:,.1f} MB/s), "
                                f"{r['errors']} errors, {elections} elections, inflight {inflight}; CPU us/entry "
                                f"leader {us['leader']:.1f} followers {us['followers']:.1f} clients {us['clients']:.1f}"
                            )

    def latency(self, system: str) -> None:
        """One synchronous client. dledger twice: a client process over gRPC (its product path: four gRPC
        hops), and appends from inside the leader's process (`bench.embedded_node`, as a broker embeds it:
        two hops), which is how PySyncObj's load always runs; PySyncObj's figures stand beside both."""
        profile = "latency" if system == "pysyncobj" else "throughput"
        where = [("", False), (" in the leader's process", True)] if system == "dledger" else [("", False)]
        for label, embedded in where:
            with self.group(system, "async", profile, embedded=embedded) as g:
                for run in range(self.p.runs):
                    if embedded:
                        r = g.embedded_load(1 * KiB, self.p.latency_ops)
                    else:
                        r = g.load(1 * KiB, 1, 1, 60.0, self.p.latency_ops, 1)
                    lat = r["lat_ms"][min(20, len(r["lat_ms"]) // 10) :]  # drop warm-up calls
                    p50, p99, mx = _pct(lat, 0.5), _pct(lat, 0.99), max(lat) if lat else float("nan")
                    # PySyncObj's load runs in its leader: its figures pair with both of dledger's
                    for suffix in [label] if system == "dledger" else ["", " in the leader's process"]:
                        self.record(f"latency 1 client 1 KiB p50{suffix}", "ms", system, p50, higher=False)
                        self.record(f"latency 1 client 1 KiB p99{suffix}", "ms", system, p99, higher=False)
                        self.record(f"latency 1 client 1 KiB max{suffix}", "ms", system, mx, higher=False)
                    _progress(
                        f"{system:9s} latency{label} run {run}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {mx:.3f} ms"
                    )

    def failover(self, system: str) -> None:
        profile = "failover" if system == "pysyncobj" else "throughput"
        times: list[float] = []
        with self.group(system, "async", profile) as g:
            for k in range(self.p.failovers):
                lead = g.wait_ready(30.0)
                time.sleep(0.3)
                dt = self._dledger_failover(g, lead) if system == "dledger" else self._pso_failover(g, lead)
                if dt is not None:
                    times.append(dt)
                _progress(f"{system:9s} failover {k}: {dt if dt is None else f'{dt:.3f} s'}")
                g.start(lead)
                g.wait_ready(30.0)
        self.record("failover median", "s", system, _median(times), higher=False)
        self.record("failover max", "s", system, max(times) if times else None, higher=False)

    def _dledger_failover(self, g: DledgerGroup, lead: str) -> float | None:
        from dledger.client.client import DLedgerClient

        # short per-call deadlines, so that the client's retry backoff (which doubles up to 200 ms within a
        # call) does not hide when the new leader starts answering; PySyncObj's probe polls every 5 ms
        with DLedgerClient(g.peers, group="bench", timeout=0.05, rpc_timeout=0.05) as c:
            c.append(b"warm", timeout=5.0)
            g.kill(lead)
            t0 = time.monotonic()
            deadline = t0 + 10.0
            while time.monotonic() < deadline:
                try:
                    c.append(b"probe")
                    return time.monotonic() - t0
                except Exception:
                    time.sleep(0.002)
        return None

    def _pso_failover(self, g: PysyncobjGroup, lead: str) -> float | None:
        g.kill(lead)
        t0 = time.monotonic()
        peers = list(g.peers.values())
        for peer in peers:
            peer.send({"cmd": "first_ack", "seconds": 10.0})
        ts = [peer.receive(15.0).get("t") for peer in peers]
        got = [t for t in ts if t is not None]
        return min(got) - t0 if got else None

    def catchup(self, system: str) -> None:
        from bench.e2e_groups import wait_until

        payload, batch = 16 * KiB, 64
        with self.group(system, "async") as g:
            lead = g.wait_ready(30.0)
            victim = next(x for x in (g.peers if system == "dledger" else g.addrs) if x != lead)
            held = g.statuses()[victim].last_index if system == "dledger" else 0  # what it keeps across the kill
            g.kill(victim)
            ops = max(1, self.p.catchup_bytes // (payload * batch))
            _progress(f"{system:9s} catch-up: appending {ops * payload * batch / MiB:,.0f} MiB with {victim} down")
            g.load(payload, batch, _inflight(payload, batch), 600.0, ops, 1)
            if system == "dledger":  # from the restart, as for PySyncObj: the follower is known behind then
                target = g.statuses()[lead].last_index
                t0 = time.monotonic()
                g.start(victim)
                wait_until(
                    lambda: (s := g.statuses().get(victim)) and s.last_index >= target,
                    600.0,
                    "the follower caught up",
                    poll=0.02,
                )
                dt = time.monotonic() - t0
                moved = (target - held) * payload  # entries other than data entries are negligible
            else:
                target = g.statuses()[lead]["log_len"]
                g.start(victim)
                t0 = time.monotonic()
                wait_until(
                    lambda: g.statuses().get(victim, {}).get("log_len", 0) >= target,
                    600.0,
                    "the follower caught up",
                    poll=0.02,
                )
                dt = time.monotonic() - t0
                moved = target * payload  # one PySyncObj log entry per item (a batch is 64 calls)
            rate = moved / MiB / dt if moved > 0 and dt > 0 else None
            if rate is None:
                _progress(f"{system:9s} catch-up: not measured (the follower was not behind at its restart)")
            else:
                _progress(f"{system:9s} catch-up: {moved / MiB:,.1f} MiB in {dt:.2f} s = {rate:,.1f} MB/s")
            self.record("follower catch-up", "MB/s", system, rate)
            g.sample_rss()
            self.record("peak RSS after catch-up (max node)", "MB", system, max(g.rss_mb.values()), higher=False)

    def soak(self, system: str) -> None:
        if self.p.soak_seconds <= 0:
            return
        with self.group(system, "async") as g:
            term0 = g.term()
            r = g.load(1 * KiB, 1, _inflight(1 * KiB, 1), self.p.soak_seconds, 1 << 40, self.clients)
            elections = g.term() - term0
            _progress(
                f"{system:9s} soak {self.p.soak_seconds:.0f} s: {r['entries'] / r['seconds']:,.0f} entries/s, "
                f"{elections} elections"
            )
            self.record(
                f"leader changes in {self.p.soak_seconds:.0f} s at full load",
                "count",
                system,
                float(elections),
                higher=False,
            )

    def run(self) -> None:
        steps: list[tuple[str, Callable[[str], None]]] = [
            ("throughput async", lambda s: self.throughput(s, "async")),
            ("throughput sync", lambda s: self.throughput(s, "sync")),
            ("latency", self.latency),
            ("failover", self.failover),
            ("catch-up", self.catchup),
            ("soak", self.soak),
        ]
        for name, step in steps:
            for system in self.systems:
                _progress(f"== {name}: {system}")
                try:
                    step(system)
                except Exception as exc:  # one failed scenario must not lose the others
                    _progress(f"!! {name} on {system} failed: {type(exc).__name__}: {exc}")
        for system in self.systems:
            rss = self.rss[system]
            self.record(
                "peak RSS (max node, whole run)", "MB", system, max(rss.values()) if rss else None, higher=False
            )
            total = sum(self.elections[system].values())
            self.record("elections during throughput runs", "count", system, float(total), higher=False)


def _size(n: int) -> str:
    return f"{n // KiB} KiB" if n >= KiB and n % KiB == 0 else f"{n} B"


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("ms", "s"):
        return f"{v:.3f} {unit}"
    if unit == "count":
        return f"{v:.0f}"
    if unit in ("MB/s", "MB"):
        return f"{v:,.0f} {unit}"
    return f"{v:,.0f}"


def table(figures: list[Figure]) -> str:
    lines = ["| figure | unit | dledger | PySyncObj | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    for f in figures:
        ratio = f.ratio
        lines.append(
            f"| {f.key} | {f.unit} | {_fmt(f.ours, f.unit)} | {_fmt(f.theirs, f.unit)} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def run(
    *,
    quick: bool = False,
    nodes: int = 3,
    json_path: str | None = None,
    clients: int = 1,
    png_path: str | None = None,
    dledger_only: bool = False,
) -> int:
    """The whole benchmark; 2 (and one line on stderr) when PySyncObj is needed but not installed."""
    if not dledger_only and pysyncobj_missing():
        print(f"dledger bench e2e: {MISSING_PYSYNCOBJ}", file=sys.stderr)
        return 2
    profile = QUICK if quick else FULL
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="dledger-e2e-"))
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    bench = Bench(profile, nodes, scratch, clients, ("dledger",) if dledger_only else SYSTEMS)
    _progress(
        f"e2e benchmark: {nodes} nodes, {'quick' if quick else 'full'} profile, scratch {scratch}, "
        f"loadavg {os.getloadavg()[0]:.2f}"
    )
    try:
        bench.run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = list(bench.figures.values())
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {
        "profile": "quick" if quick else "full",
        "nodes": nodes,
        "clients": clients,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {**machine(), "loadavg_at_start": load_at_start},
        "pysyncobj_settings": {"common": COMMON, "profiles": PROFILES},
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
        "rss_mb": bench.rss,
        "elections": bench.elections,
        "cpu_us_per_entry": bench.cpu,
    }
    out = RESULTS / f"e2e-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(result, indent=1))
    png = pathlib.Path(png_path) if png_path else RESULTS / f"e2e-{stamp}.png"
    series: dict[str, list[tuple[float, float]]] = {}
    for f in figures:
        parts = f.key.split()
        if parts[0] != "throughput":
            continue
        flush, size, unit, batch = parts[1], parts[2], parts[3], parts[4]
        x = float(size) * (KiB if unit == "KiB" else 1)
        for system, v in (("dledger", f.ours), ("pysyncobj", f.theirs)):
            if v:
                series.setdefault(f"{system} {flush} {batch}", []).append((x, v * x / MiB))
    from bench.e2e_png import plot_throughput

    plot_throughput(png, series)
    print(table(figures))
    print(f"\nmachine: {result['machine']}; {result['seconds']} s; JSON {out}; PNG {png}")
    return 0


def add_e2e_bench_command(bench_subparsers: Any) -> None:
    """`dledger bench e2e [--quick] [--nodes N] [--clients N] [--json PATH] [--png PATH]`."""
    p = bench_subparsers.add_parser("e2e", help="3-node group vs PySyncObj: throughput, latency, failover, catch-up")
    _add_args(p)
    p.set_defaults(func=_cmd)


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a smaller run (< 2 minutes)")
    p.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    p.add_argument("--clients", type=int, default=1, help="client processes driving dledger (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--png", metavar="PATH", help="where to draw throughput vs payload (default bench/results/)")
    p.add_argument("--dledger-only", action="store_true", help="measure dledger alone (no PySyncObj, no ratios)")


def _cmd(args: argparse.Namespace) -> int:
    return run(
        quick=args.quick,
        nodes=args.nodes,
        json_path=args.json,
        clients=args.clients,
        png_path=args.png,
        dledger_only=args.dledger_only,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    _add_args(p)
    return _cmd(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
