"""`Config.lazy_commit`: followers learn a new commit index from the next AppendEntries or heartbeat instead of
a message of its own. Checked against the eager default: fewer messages for a lone append, the same outcome."""

from __future__ import annotations

from dledger.raft import Role
from dledger.raft.membership import ConfChange, ConfChangeOp
from dledger.raft.messages import AppendEntries
from dledger.storage_api import EntryKind
from dledger.testing import Cluster


def _one_append(lazy: bool) -> tuple[Cluster, str, int, int]:
    """Elect, settle, then propose one entry and run until quiet without ticking: (cluster, leader, index,
    AppendEntries sent for that one append)."""
    c = Cluster(3, seed=1, lazy_commit=lazy)
    lead = c.run_until_leader()
    c.stabilize()
    before = c.stats["sent.AppendEntries"]
    p = c.propose(lead, b"x")
    c.stabilize()
    return c, lead, p.last_index, c.stats["sent.AppendEntries"] - before


def test_eager_commit_sends_a_commit_message_of_its_own() -> None:
    c, _, index, sent = _one_append(lazy=False)
    assert sent == 4  # the entry to each follower, then the new commit index to each
    for i in c.ids:
        assert c.core(i).log.commit_index == index


def test_lazy_commit_halves_the_messages_and_the_heartbeat_carries_the_commit() -> None:
    c, lead, index, sent = _one_append(lazy=True)
    assert sent == 2  # only the entry to each follower
    assert c.core(lead).log.commit_index == index
    assert [e.data for e in c.nodes[lead].applied if e.kind is EntryKind.NORMAL] == [b"x"]
    followers = [i for i in c.ids if i != lead]
    assert all(c.core(i).log.commit_index < index for i in followers)  # not told yet
    c.tick(lead, c.core(lead).config.heartbeat_tick)
    c.stabilize()
    for i in followers:
        assert c.core(i).log.commit_index == index
        assert [e.data for e in c.nodes[i].applied if e.kind is EntryKind.NORMAL] == [b"x"]


def test_lazy_commit_rides_on_the_next_append() -> None:
    c, lead, index, _ = _one_append(lazy=True)
    c.propose(lead, b"y")
    c.process(lead)
    appends = [m for m in c.network if isinstance(m, AppendEntries) and m.entries]
    assert len(appends) == 2 and all(m.leader_commit == index for m in appends)


def test_lazy_commit_still_tells_followers_before_a_removed_leader_steps_down() -> None:
    c = Cluster(3, seed=2, lazy_commit=True)
    lead = c.run_until_leader()
    c.stabilize()
    p = c.change(lead, ConfChange(ConfChangeOp.REMOVE, lead))
    c.stabilize()
    assert c.core(lead).role is Role.FOLLOWER
    others = [i for i in c.ids if i != lead]
    for i in others:  # both heard the commit of the removal without any tick
        assert c.core(i).log.commit_index >= p.last_index
    new = c.run_until_leader()
    assert new in others
