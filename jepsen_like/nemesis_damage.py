"""The `damage-log` nemesis: a stopped replica's log is damaged inside its durable range, then it restarts.

Not a crash: `start` SIGKILLs one running follower (never the leader, and only while every other node
runs, so one damaged replica at a time leaves a quorum of voters), then damages what its log had fsynced
(by the flush checkpoint, or a closed segment, which was fsynced at rollover): it either cuts the last
segment's data inside the checkpointed range, or flips one bit there, or flips one bit in a closed
segment; and restarts the node at once. The node must find the damage at start, recover the range from
the leader without voting, and lose nothing acknowledged: the checker judges the history as usual.
`stop` has nothing to undo (the node runs); it says what was done.
"""

from __future__ import annotations

import pathlib
import random
import signal
from typing import Any

from dledger.commitlog.checkpoint import read_checkpoint
from dledger.commitlog.segment import segment_name
from jepsen_like.cluster import Cluster

__all__ = ["DAMAGE_NEMESES"]

Detail = dict[str, Any]


def _durable_range(log_dir: pathlib.Path) -> tuple[str, int] | None:
    """(last segment name, fsynced data bytes) from the log's flush checkpoint, if it names a segment."""
    cp = read_checkpoint(str(log_dir))
    return None if cp is None or cp.data_len == 0 else (segment_name(cp.start), int(cp.data_len))


def _damage_start(cluster: Cluster, rng: random.Random) -> Detail:
    if any(not cluster.running(n) for n in cluster.should_run):
        return {"skipped": "another node is down: damage one replica at a time"}
    leader = cluster.leader()
    followers = [n for n in sorted(cluster.should_run) if n != leader and n not in cluster.paused]
    if leader is None or not followers:
        return {"skipped": "no leader or no follower to damage"}
    node = rng.choice(followers)
    cluster.kill(node, signal.SIGKILL)
    log_dir = cluster.log_dir(node)
    data = sorted(p for p in (log_dir / "data").iterdir() if p.name.isdigit())
    durable = _durable_range(log_dir)
    kinds = [k for k, ok in (("cut", durable), ("flip-active", durable), ("flip-closed", len(data) > 1)) if ok]
    detail: Detail = {"node": node}
    if not kinds:
        detail["skipped"] = "nothing fsynced to damage yet"
    else:
        kind = rng.choice(kinds)
        if kind == "flip-closed":
            path = rng.choice(data[:-1])
            at = rng.randrange(path.stat().st_size)
        else:
            assert durable is not None
            path = log_dir / "data" / durable[0]
            at = rng.randrange(min(durable[1], path.stat().st_size))
        if kind == "cut":
            with open(path, "r+b") as f:
                f.truncate(at)
        else:
            with open(path, "r+b") as f:
                f.seek(at)
                byte = f.read(1)[0]
                f.seek(at)
                f.write(bytes([byte ^ (1 << rng.randrange(8))]))
        detail.update(kind=kind, file=path.name, at=at)
    cluster.procs.pop(node, None)
    cluster.start(node)
    return detail


def _damage_stop(cluster: Cluster, rng: random.Random, detail: Detail) -> Detail:
    return {"node": detail.get("node"), "running": bool(detail.get("node")) and cluster.running(detail["node"])}


DAMAGE_NEMESES = {"damage-log": (_damage_start, _damage_stop)}
