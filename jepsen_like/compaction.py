"""Log compaction faults: followers that must catch up by InstallSnapshot, and the archive of
what compaction dropped, so that acknowledged appends stay checkable after they are gone from every log.

Nemeses (group `compact`):
- `compact-follower`: start takes a follower away (SIGKILL, or cut off from every other node), then compacts
  every other live node (the leader included) until the leader's log starts after the follower's last
  index, so the follower can only catch up by the leader's snapshot; stop brings it back (restart or heal)
  and waits a while for it to catch up, recording its first index (above 1 once it installed a snapshot);
- `compact-leader`: the same with the leader cut off (its commit index taken as what it holds): it keeps
  appending what clients send it, uncommitted, while the others elect a leader and compact, so on healing
  it must discard that conflicting tail and install the new leader's snapshot;
- `compact-all`: compacts every live node at once, with no other fault, so that later restarts, lagging
  followers and fresh members (the membership nemeses' re-added, wiped nodes) need a snapshot.
Both need small log segments (compaction drops whole segments only): a run that selects them starts its
nodes with `mappedFileSizeCommitLog=SEGMENT_BYTES` in their generated config files.

Every compaction is one record `{"node", "outcome", "first_index", "snapshot_index", "before", ...}` in the
nemesis detail (`compactions`). Before a node is compacted, its meta file is copied and its segment files are
hard-linked into `<root>/archive/<node>-<k>/` (`archive`); after it, the links of segments the node still
holds are removed. What stays is exactly the segments compaction dropped, readable with `dump_entries` from
the old base. Invariant: only archived entries at or below the node's applied index read *before* the links
were made are kept (`archived_entries`): those were committed then, so their bytes never changed afterwards
(an unlinked file keeps its content), and nothing uncommitted is ever taken for a committed entry.
`installed_snapshots` reads the nodes' logs ("installed the leader's snapshot at index N", at INFO).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import signal
import time
from typing import TYPE_CHECKING, Any

from dledger.commitlog.meta import META_NAME
from dledger.commitlog.segment import DATA_DIR, INDEX_DIR
from dledger.commitlog.verify import Problem, dump_entries

if TYPE_CHECKING:
    from jepsen_like.cluster import Cluster

__all__ = ["COMPACTION_NEMESES", "SEGMENT_BYTES", "archived_entries", "compact_nodes", "installed_snapshots"]

Detail = dict[str, Any]
SEGMENT_BYTES = 4096  # the smallest log segments (>= 4096): about 60 entries each, so compaction drops some
# even in a short run on a loaded machine (16 KiB segments sometimes dropped nothing in 14 s)
COMPACT_TIMEOUT = 3.0
COMPACT_UNTIL = 12.0  # seconds the follower nemesis keeps compacting until the follower's entries are gone
COMPACT_EVERY = 0.5
CATCH_UP_WAIT = 10.0
INSTALLED = re.compile(r"installed the leader's snapshot at index (\d+)")


def _status(cluster: Cluster, node: str) -> Any:
    with cluster.node_client(node, timeout=1.0, rpc_timeout=1.0) as c:
        return c.status(timeout=1.0)[0]


def _link_archive(cluster: Cluster, node: str) -> pathlib.Path | None:
    """Hard-link the node's segment files and copy its meta file into a fresh archive directory."""
    log_dir = cluster.log_dir(node)
    if not (log_dir / DATA_DIR).is_dir():
        return None
    cluster.archives[node] = cluster.archives.get(node, 0) + 1
    dest = cluster.root / "archive" / f"{node}-{cluster.archives[node]}"
    for sub in (DATA_DIR, INDEX_DIR):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for path in (log_dir / sub).iterdir():
            if path.name.isdigit():
                try:
                    os.link(path, dest / sub / path.name)
                except FileNotFoundError:
                    pass  # removed meanwhile (a snapshot install reset the log): not ours to keep
    if (log_dir / META_NAME).exists():
        shutil.copyfile(log_dir / META_NAME, dest / META_NAME)
    return dest


def _prune_archive(cluster: Cluster, node: str, dest: pathlib.Path) -> int:
    """Unlink what the node still holds; the number of data segments it dropped (0: the archive is removed)."""
    log_dir = cluster.log_dir(node)
    for sub in (DATA_DIR, INDEX_DIR):
        kept = {p.name for p in (log_dir / sub).iterdir()} if (log_dir / sub).is_dir() else set()
        for path in (dest / sub).iterdir():
            if path.name in kept:
                path.unlink()
    dropped = sum(1 for _ in (dest / DATA_DIR).iterdir())
    if dropped == 0:
        shutil.rmtree(dest)
    return dropped


def compact_nodes(cluster: Cluster, nodes: list[str]) -> list[Detail]:
    """Compact each of `nodes` as far as it can (archiving what it drops); one record per node."""
    out: list[Detail] = []
    for node in nodes:
        began = time.monotonic()
        record: Detail = {"node": node}
        try:
            before = _status(cluster, node)
            if not before.reachable:
                raise RuntimeError(before.error or "unreachable")
            record.update(before=before.first_index, applied=before.applied_index)
            dest = _link_archive(cluster, node)
            try:
                with cluster.node_client(node, timeout=COMPACT_TIMEOUT, rpc_timeout=COMPACT_TIMEOUT) as c:
                    first, snapshot = c.compact(node, timeout=COMPACT_TIMEOUT)
            finally:
                dropped = _prune_archive(cluster, node, dest) if dest is not None else 0
            if dropped and dest is not None:
                meta = {"node": node, "applied": before.applied_index, "first_index": first}
                (dest / "archive.json").write_text(json.dumps(meta))
                record["archive"] = dest.name
            record.update(outcome="ok", first_index=first, snapshot_index=snapshot, segments_dropped=dropped)
        except Exception as exc:
            record.update(outcome="fail", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        record["ms"] = round((time.monotonic() - began) * 1000)
        out.append(record)
    return out


def _others(cluster: Cluster, away: str | None) -> list[str]:
    return [n for n in cluster.live() if n != away and n not in cluster.paused]


_BROKER = "compaction of broker replicas is not driven by jepsen_like"


def _follower_start(cluster: Cluster, rng: random.Random) -> Detail:
    if cluster.broker:
        return {"skipped": _BROKER}
    leader = cluster.leader()
    members = cluster.view.members()
    followers = sorted(n for n in cluster.live() if n != leader and n in members and n not in cluster.paused)
    if leader is None or not followers:
        return {"skipped": "no leader" if leader is None else "no running follower"}
    return _away_and_compact(cluster, rng.choice(followers), rng.choice(["kill", "cut"]), leader)


def _leader_start(cluster: Cluster, rng: random.Random) -> Detail:
    """Cut the leader off: it keeps taking appends it cannot commit (a conflicting tail), the others elect a
    new leader and compact past the old leader's commit index, so it must drop that tail and install."""
    if cluster.broker:
        return {"skipped": _BROKER}
    leader = cluster.leader()
    if leader is None:
        return {"skipped": "no leader"}
    return _away_and_compact(cluster, leader, "cut", leader)


def _away_and_compact(cluster: Cluster, node: str, how: str, leader: str) -> Detail:
    """Take `node` away (cut it off, and for "kill" then SIGKILL it) and compact the others until the
    leader's first index is past the node's last index: it then needs a snapshot. The node is cut off
    first and its last index read once that has settled, so the figure is where its log really ends (read
    before the cut, entries still arriving until the cut took effect once let it catch up by appends)."""
    cluster.partition({frozenset((node, o)) for o in cluster.ids if o != node})
    time.sleep(COMPACT_EVERY)  # what was already on its way lands (or is dropped) first
    status = _status(cluster, node)
    # an old leader may hold a tail the others never got: what it can need next is at most past its last
    last = status.last_index if status.reachable else 0
    if how == "kill":
        cluster.kill(node, signal.SIGKILL)
        cluster.heal_network()  # a dead node hears nothing; the others keep talking
    detail: Detail = {"node": node, "how": how, "last_index": last, "compactions": []}
    deadline = time.monotonic() + COMPACT_UNTIL
    while time.monotonic() < deadline:
        time.sleep(COMPACT_EVERY)
        records = compact_nodes(cluster, _others(cluster, node))
        detail["compactions"] += records
        leader = next((n for n in [cluster.leader()] if n is not None and n != node), leader)
        firsts = {r["node"]: r["first_index"] for r in records if r["outcome"] == "ok"}
        if firsts.get(leader, 0) > last + 1:  # the leader no longer holds what the node needs next
            detail["leader_first_index"] = firsts[leader]
            break
    detail["needs_snapshot"] = "leader_first_index" in detail
    return detail


def _follower_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    node = detail.get("node")
    if not node:
        return {}
    if detail.get("how") == "cut":
        cluster.heal_network()
    elif not cluster.running(node) and node in cluster.should_run:
        cluster.procs.pop(node, None)
        cluster.start(node)
    began = time.monotonic()
    target = None
    while time.monotonic() < began + CATCH_UP_WAIT:
        leader = cluster.leader()
        if target is None and leader is not None and leader != node:
            s = _status(cluster, leader)
            target = s.commit_index if s.reachable else None
        s = _status(cluster, node)
        if target is not None and s.reachable and s.applied_index >= target:
            return {"node": node, "caught_up": True, "first_index": s.first_index, "applied": s.applied_index,
                    "target": target, "ms": round((time.monotonic() - began) * 1000)}  # fmt: skip
        time.sleep(0.2)
    s = _status(cluster, node)
    return {"node": node, "caught_up": False, "first_index": s.first_index, "applied": s.applied_index,
            "target": target, "reachable": s.reachable}  # fmt: skip


def _all_start(cluster: Cluster, rng: random.Random) -> Detail:
    if cluster.broker:
        return {"skipped": _BROKER}
    nodes = _others(cluster, None)
    if not nodes:
        return {"skipped": "no running node"}
    return {"compactions": compact_nodes(cluster, nodes)}


def _all_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    return {}


COMPACTION_NEMESES = {
    "compact-follower": (_follower_start, _follower_stop),
    "compact-leader": (_leader_start, _follower_stop),
    "compact-all": (_all_start, _all_stop),
}


def archived_entries(root: pathlib.Path) -> tuple[list[list[Any]], list[str]]:
    """Every archive's committed entries, `[index, term, kind, data, archive]`, and the problems found."""
    out: list[list[Any]] = []
    problems: list[str] = []
    for dest in sorted((root / "archive").glob("*/archive.json")):
        meta = json.loads(dest.read_text())
        top = min(int(meta["applied"]), int(meta["first_index"]) - 1)
        try:
            for item in dump_entries(str(dest.parent), 1, top + 1):
                if isinstance(item, Problem):
                    problems.append(f"archive {dest.parent.name}: {item}")
                else:
                    data = item.data.decode("utf-8", "backslashreplace")
                    out.append([item.index, item.term, int(item.kind), data, dest.parent.name])
        except Exception as exc:
            problems.append(f"archive {dest.parent.name}: {type(exc).__name__}: {exc}")
    return out, problems


def installed_snapshots(log_path: pathlib.Path) -> list[int]:
    """The snapshot indexes a node's log says it installed."""
    if not log_path.exists():
        return []
    return [int(m.group(1)) for m in INSTALLED.finditer(log_path.read_text(errors="replace"))]
