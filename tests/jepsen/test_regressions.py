"""Deterministic regression tests for bugs that the jepsen_like campaign found in dledger.

Each one reproduces the bug on the in-memory simulation (`dledger.testing.Cluster`: no sockets, no clocks)
and is marked `xfail(strict=True)` until the owners fix it: then it passes, the strict xfail fails, and the
marker must be removed.
"""

from __future__ import annotations

import pytest

from dledger.storage_api import HardState
from dledger.testing import Cluster


def _lose_unsynced_tail(c: Cluster, node_id: str, keep: int) -> None:
    """Power cut on an async-flush node: crash it and cut its log back to `keep` entries (what was fsynced),
    as `dledger node` recovers it: the commit index is clamped to the log, the state machine restarts below."""
    c.crash(node_id)
    node = c.nodes[node_id]
    node.log.truncate_after(keep)
    hs = node.store.load()
    node.store.save(HardState(hs.current_term, hs.voted_for, min(hs.commit_index, keep)))
    node.applied = node.applied[:keep]
    c.start(node_id)


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a follower that lost its un-fsynced tail (flush=async, power cut) never catches up: the "
    "leader keeps its old match index and drops every reject below it as stale (Progress.maybe_decrease_to)",
)
def test_follower_that_lost_its_unsynced_tail_catches_up() -> None:
    c = Cluster(3, seed=7)
    leader = c.run_until_leader()
    for k in range(10):
        c.propose(leader, f"a-{k}".encode())
    c.stabilize()
    follower = next(i for i in c.ids if i != leader)
    last = c.core(leader).last_index
    assert c.core(follower).last_index == last
    _lose_unsynced_tail(c, follower, keep=last - 5)
    for k in range(5):
        c.propose(leader, f"b-{k}".encode())
        c.run(200)  # with the bug the leader and the follower exchange append / reject without end
    for _ in range(20):  # heartbeats: plenty of chances to find the follower's real log end
        c.tick(times=c.core(leader).config.heartbeat_tick)
        c.run(200)
    assert c.core(follower).last_index == c.core(leader).last_index, c.describe()
    assert c.core(follower).commit_index == c.core(leader).commit_index
