"""One run: cluster up, clients and the nemesis schedule for `duration`, heal, converge, stop, check, report.

Two workloads: `log` (`dledger node` processes, `workload.py` clients appending and reading, `checker.check`)
and `broker` (`dledger broker` replicas with their RocketMQ 5 endpoints, `broker_workload.py` producers and
consumers on the official client, `broker_checker.check_broker`).

Phases and their invariants:
1. setup: network (netns as root, loopback proxies otherwise), nodes, a leader; every created resource is
   in the run state file, and `finally` tears everything down (also on Ctrl-C or an error);
2. faults: the client processes run the workload while the schedule (drawn from the seed) starts and stops
   nemeses; every start and stop goes to `nemesis.jsonl`;
3. heal: `heal_everything` (with membership nemeses also `membership.restore`: every running node a voter),
   then the clients keep going for `recovery` seconds (operations after healing must succeed again), then
   stop (broker: producers stop, consumers drain for at most `drain` seconds);
4. converge: wait until every member of the configuration answers with the same commit index == applied
   index and one leader; stop the nodes with SIGTERM; `replicas.final_state` compares the members' committed
   logs (a node removed and not re-added is not compared; a re-added one was wiped and caught up again);
   `final.json` also gets the entries compaction dropped (`compaction.archived_entries`) and the snapshots
   each node installed (from its log);
5. check and report: `checker.check` on the merged history and the final state, written with plots to the
   report directory. The exit code is 0 only when the verdict is valid.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from jepsen_like import compaction, membership
from jepsen_like import nemesis as nem
from jepsen_like.checker import Verdict, check
from jepsen_like.cluster import REPO_ROOT, Cluster, NetMode
from jepsen_like.history import load_events, pair_ops
from jepsen_like.netns import netns_supported
from jepsen_like.procutil import RunState
from jepsen_like.replicas import final_state

__all__ = ["RunOptions", "check_report", "replay_command", "run"]

DEFAULT_REPORTS = pathlib.Path("/tmp/jepsen_like/reports")
MEMBERS_REFRESH = 1.0  # seconds between the clients' readings of the configuration (membership runs)


@dataclass
class RunOptions:
    seed: int | None = None
    nodes: int = 3
    duration: float = 60.0
    nemeses: list[str] = field(default_factory=lambda: ["kill", "pause", "partition"])
    clients: int = 3
    threads: int = 2
    flush: str = "sync"
    lease_read: bool = False
    read_fraction: float = 0.25
    recovery: float = 5.0
    net: str = "auto"  # auto | netns | proxy
    out: str | None = None
    plots: bool = True
    overlap: bool = False  # a process fault and a network fault may be active at once
    workload: str = "log"  # log | broker
    drain: float = 60.0  # broker: the longest a consumer drains after the clients were told to stop
    peer_transport: str = "grpc"  # grpc | tcp: how the nodes replicate (dLegerPeerTransport)


def replay_command(o: RunOptions) -> str:
    args = ["python", "-m", "jepsen_like", "run", "--seed", str(o.seed), "--nodes", str(o.nodes),
            "--duration", f"{o.duration:g}", "--nemesis", ",".join(o.nemeses), "--clients", str(o.clients),
            "--threads", str(o.threads), "--flush", o.flush, "--read-fraction", f"{o.read_fraction:g}"]  # fmt: skip
    if o.lease_read:
        args.append("--lease-read")
    if o.overlap:
        args.append("--overlap")
    if o.workload != "log":
        args += ["--workload", o.workload]
    if o.peer_transport != "grpc":
        args += ["--peer-transport", o.peer_transport]
    return " ".join(shlex.quote(a) for a in args)


def _say(msg: str) -> None:
    print(f"[jepsen_like {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class _Timeline:
    def __init__(self, path: pathlib.Path) -> None:
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, kind: str, name: str, detail: dict[str, Any], t: int | None = None) -> None:
        """`t`: when the action began (default now); a start is written once it is done, with its begin time."""
        event = {"t": t or time.monotonic_ns(), "type": kind, "nemesis": name, "detail": detail}
        self.f.write(json.dumps(event, default=str) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _net_mode(requested: str) -> NetMode:
    if requested == "proxy":
        return "proxy"
    why = netns_supported()
    if why is None:
        return "netns"
    if requested == "netns":
        raise SystemExit(f"jepsen_like: --net netns is not possible here: {why}")
    _say(f"network namespaces unavailable ({why}): falling back to a loopback TCP proxy per link")
    return "proxy"


def run(o: RunOptions) -> int:
    if o.seed is None:
        o.seed = random.SystemRandom().randrange(2**31)
    o.nemeses = nem.expand(o.nemeses) if o.nemeses else []
    rng = random.Random(o.seed)
    report = pathlib.Path(o.out) if o.out else DEFAULT_REPORTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{o.seed}"
    report.mkdir(parents=True, exist_ok=True)
    _say(f"seed {o.seed}; replay with: {replay_command(o)}")
    _say(f"report directory: {report}")
    (report / "options.json").write_text(json.dumps({**dataclasses.asdict(o), "replay": replay_command(o)}, indent=1))
    schedule = nem.make_schedule(rng, o.nemeses, o.duration, overlap=o.overlap)
    (report / "schedule.json").write_text(json.dumps([dataclasses.asdict(s) for s in schedule], indent=1))
    state = RunState(f"{random.SystemRandom().randrange(16**4):04x}")
    mode = _net_mode(o.net)
    broker = o.workload == "broker"
    spares = 1 if nem.uses_membership(o.nemeses) and not broker else 0
    segment_bytes = compaction.SEGMENT_BYTES if nem.uses_compaction(o.nemeses) and not broker else None
    cluster = Cluster(report / "work", o.nodes, flush=o.flush, net=mode, state=state, lease_read=o.lease_read,
                      broker=broker, spares=spares, segment_bytes=segment_bytes,
                      peer_transport=o.peer_transport)  # fmt: skip
    timeline = _Timeline(report / "nemesis.jsonl")
    clients: list[subprocess.Popen[bytes]] = []
    history_dir = report / "history"
    history_dir.mkdir(exist_ok=True)
    final: dict[str, Any] | None = None
    counts: dict[str, int] = {}
    try:
        cluster.setup_network()
        _say(f"network: {mode}; nodes: {cluster.peers_string()}" + (f" (spare: {cluster.spares})" if spares else ""))
        cluster.start_all()
        leader = cluster.wait_for_leader(60)
        if leader is None:
            raise RuntimeError("no leader was elected within 60 s of start")
        _say(f"leader {leader}; starting {o.clients} client processes x {o.threads} workers")
        stop_file = report / "work" / "STOP"
        total = o.duration + o.recovery + 30
        for k in range(o.clients):
            cmd = _client_command(o, cluster, k, total, history_dir / f"c{k}.jsonl", stop_file)
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                    stderr=open(report / "work" / f"c{k}.err", "ab"))  # fmt: skip  # noqa: SIM115
            state.add("pids", proc.pid)
            clients.append(proc)
        t0 = time.monotonic()
        timeline.write("phase", "faults", {"duration": o.duration})
        events = sorted([(s.at, 1, k) for k, s in enumerate(schedule)] +
                        [(s.at + s.hold, 0, k) for k, s in enumerate(schedule)])  # fmt: skip
        active: dict[int, tuple[random.Random, dict[str, Any]]] = {}
        for at, is_start, k in events:
            _sleep_until(t0 + at)
            n = nem.NEMESES[schedule[k].nemesis]
            if is_start:
                step_rng = random.Random(schedule[k].seed)
                began = time.monotonic_ns()
                try:
                    detail = n.start(cluster, step_rng)
                except Exception as exc:
                    detail = {"error": f"{type(exc).__name__}: {exc}"}
                timeline.write("start", n.name, detail, began)
                _write_change_failures(timeline, n.name, detail)
                _say(f"+{at:6.1f}s start {n.name} {_short(detail)}")
                if "skipped" not in detail:
                    counts[n.name] = counts.get(n.name, 0) + 1
                    active[k] = (step_rng, detail)
            elif k in active:
                step_rng, detail = active.pop(k)
                try:
                    result = n.stop(cluster, step_rng, detail)
                except Exception as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                timeline.write("stop", n.name, result)
                _write_change_failures(timeline, n.name, result)
                _say(f"+{time.monotonic() - t0:6.1f}s stop  {n.name} {_short(result)}")
        _sleep_until(t0 + o.duration)
        nem.heal_everything(cluster)
        timeline.write("phase", "healed", {})
        restored: dict[str, Any] | None = None
        if spares:
            restored = membership.restore(cluster)
            timeline.write("restore", "membership", restored)
            _write_change_failures(timeline, "restore", restored)
            _say(f"membership restored: {restored['done']}; configuration {restored['view']}")
        _say(f"healed; clients continue for {o.recovery:g} s")
        time.sleep(o.recovery)
        stop_file.touch()
        wait_until = time.monotonic() + 30 + (o.drain if broker else 0)
        for proc in clients:
            try:
                proc.wait(max(wait_until - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            state.remove_pid(proc.pid)
        timeline.write("phase", "clients-stopped", {})
        healed, commit, problems = _converge(cluster)
        if restored is not None and not restored["done"]:
            problems.append(f"the configuration was not restored to every running node as a voter: {restored['view']}")
        exits = cluster.stop_all()
        for node_id, code in exits.items():
            if code not in (0, None):
                problems.append(f"{node_id} exited {code} on SIGTERM")
        for node_id in cluster.ids:
            path = report / "work" / "logs" / f"{node_id}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            if "Traceback" in text:
                problems.append(f"{node_id}'s log has a Traceback (see work/logs/{node_id}.log)")
        compared = {n: cluster.log_dir(n) for n in cluster.ids if n in cluster.view.members()}
        final = final_state(compared, commit, healed, problems)
        final["node_problems"] = problems
        final["members"] = cluster.view.to_dict()
        final["wipes"] = cluster.wipes
        final["snapshots_installed"] = {n: compaction.installed_snapshots(report / "work" / "logs" / f"{n}.log")
                                        for n in cluster.ids}  # fmt: skip
        final["archived"], archive_problems = compaction.archived_entries(report / "work")
        final["replica_problems"] += archive_problems
        if broker:  # the entries are encoded broker commands, which the broker checker does not read
            final["entries"] = []
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        nem.stop_storms()
        cluster.close()
        timeline.close()
        state.discard()
    (report / "final.json").write_text(json.dumps(final, indent=1))
    verdict = check_report(report, plots=o.plots, faults=counts)
    return 0 if verdict.valid else 1


def _client_command(o: RunOptions, cluster: Cluster, k: int, total: float, out: pathlib.Path,
                    stop_file: pathlib.Path) -> list[str]:  # fmt: skip
    if o.workload == "broker":
        return [sys.executable, "-m", "jepsen_like.broker_workload", "--endpoints", cluster.endpoints_string(),
                "--client", f"c{k}", "--index", str(k), "--threads", str(o.threads), "--duration", str(total),
                "--drain", str(o.drain), "--out", str(out), "--stop-file", str(stop_file)]  # fmt: skip
    cmd = [sys.executable, "-m", "jepsen_like.workload", "--peers", cluster.peers_string(), "--client", f"c{k}",
           "--threads", str(o.threads), "--seed", str(o.seed), "--duration", str(total), "--out", str(out),
           "--read-fraction", str(o.read_fraction), "--stop-file", str(stop_file)]  # fmt: skip
    if cluster.spares:  # the clients start with the initial members and follow the configuration
        cmd += ["--members", ",".join(cluster.initial), "--refresh-members", str(MEMBERS_REFRESH)]
    return cmd


def _write_change_failures(timeline: _Timeline, name: str, detail: dict[str, Any]) -> None:
    """A membership change that failed (`fail`) or whose outcome is unknown (`info`) is also an `info` event."""
    for step in detail.get("steps", []):
        if step.get("outcome") in ("fail", "info") and step.get("op") in ("add-learner", "promote", "remove"):
            timeline.write("info", name, step)


def _short(detail: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in detail.items() if k != "durable"}, default=str)
    return text if len(text) < 160 else text[:157] + "..."


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _converge(cluster: Cluster, timeout: float = 60.0) -> tuple[bool, dict[str, int], list[str]]:
    """Wait until every member (of the configuration the leader reports) reports the same commit index,
    applied == commit, and a leader in that term; running nodes that are no members are not waited for."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if not membership.read_members(cluster):
            time.sleep(0.2)
            continue
        members = cluster.view.members()
        statuses = cluster.statuses(timeout=1.0)
        infos = {n: s for n, s in statuses.items() if n in members}
        last = {n: (s.role, s.term, s.commit_index, s.applied_index, s.last_index, s.reachable)
                for n, s in statuses.items()}  # fmt: skip
        if set(infos) == members and all(s.reachable for s in infos.values()):
            commits = {s.commit_index for s in infos.values()}
            leaders = [s for s in infos.values() if s.role == "leader"]
            # the leader has committed its whole log (its term's no-op included): nothing is pending
            if (len(commits) == 1 and all(s.applied_index == s.commit_index for s in infos.values())
                    and len(leaders) == 1 and all(s.leader_id == leaders[0].id for s in infos.values())
                    and leaders[0].last_index == leaders[0].commit_index):  # fmt: skip
                return True, {n: s.commit_index for n, s in infos.items()}, []
        time.sleep(0.2)
    commit = {n: int(v[2]) for n, v in last.items() if v[5] and n in cluster.view.members()}
    return False, commit, [f"no convergence within {timeout:g} s: {last}"]


def check_report(report: pathlib.Path, *, plots: bool = True, faults: dict[str, int] | None = None) -> Verdict:
    """(Re)check a report directory: merge the history, check it, write verdict.json, summary and plots."""
    events = load_events(sorted((report / "history").glob("*.jsonl")))
    ops = pair_ops(events)
    with open(report / "history.jsonl", "w", encoding="utf-8") as f:
        for e in events:
            f.write(e.to_json() + "\n")
    final_path = report / "final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else None
    options_path = report / "options.json"
    workload = json.loads(options_path.read_text()).get("workload", "log") if options_path.exists() else "log"
    if workload == "broker":
        from jepsen_like.broker_checker import check_broker

        verdict = check_broker(ops, final)
    else:
        verdict = check(ops, final, committed_changes(report))
    if faults is None:
        faults = _fault_counts(report)
    verdict.stats.update(compaction_stats(report, final))
    out = verdict.to_dict()
    out["faults"] = faults
    (report / "verdict.json").write_text(json.dumps(out, indent=1))
    if plots:
        try:
            from jepsen_like.plots import plot_report

            plot_report(report, ops)
        except ImportError as exc:
            _say(f"plots skipped: {exc} (pip install matplotlib)")
    lines = [f"valid: {verdict.valid}", f"stats: {json.dumps(verdict.stats)}", f"faults: {json.dumps(faults)}",
             f"anomalies: {json.dumps(verdict.counts)}"]  # fmt: skip
    for a in verdict.anomalies[:20]:
        lines.append(f"  {a.kind}: {a.message}")
    (report / "summary.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        _say(line)
    return verdict


def committed_changes(report: pathlib.Path) -> list[dict[str, Any]]:
    """The membership changes the timeline records as committed (outcome ok, with their index)."""
    out: list[dict[str, Any]] = []
    path = report / "nemesis.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e["type"] in ("start", "stop", "restore"):
                out += [s for s in e["detail"].get("steps", []) if s.get("outcome") == "ok" and "index" in s]
    return out


def compaction_stats(report: pathlib.Path, final: dict[str, Any] | None) -> dict[str, int]:
    """Compactions recorded in the timeline (tried, done, and those that dropped segments) and the snapshots
    the nodes installed (from their logs, in `final.json`)."""
    records: list[dict[str, Any]] = []
    path = report / "nemesis.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            records += json.loads(line)["detail"].get("compactions", [])
    installed = (final or {}).get("snapshots_installed") or {}
    return {"compactions": len(records), "compactions_ok": sum(r.get("outcome") == "ok" for r in records),
            "compactions_dropping": sum(int(r.get("segments_dropped", 0)) > 0 for r in records),
            "snapshots_installed": sum(len(v) for v in installed.values())}  # fmt: skip


def _fault_counts(report: pathlib.Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    path = report / "nemesis.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e["type"] == "start" and "skipped" not in e["detail"]:
                counts[e["nemesis"]] = counts.get(e["nemesis"], 0) + 1
    return counts
