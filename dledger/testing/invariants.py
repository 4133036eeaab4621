"""`SafetyChecker`: Raft's safety properties (paper Figure 3, thesis 3.6) checked over a `Cluster`'s history.

Attach it to a cluster, call `record_proposal` / `record_read` when the test asks for them, and `check()`
after every step. Every failed property raises `AssertionError` naming the property and the nodes.

Properties:
- Election Safety: at most one leader per term over the whole history;
- one vote per term per node and store (from the hard states nodes persisted; a wiped store starts afresh);
- Leader Append-Only: a leader's log only grows during its term;
- Log Matching: same (index, term) means same entry, and identical logs up to it;
- Leader Completeness: an entry committed before a term is in the log of that term's leader;
- State Machine Safety: the same entry is applied at each index everywhere;
- monotonic: a core's term and commit never go back; persisted term and commit never go back across
  restarts (of one store); a restarted core resumes at the state machine's applied index; applied <= commit <= last;
- an acknowledged proposal (applied on the node that accepted it, in the same term) keeps its index
  and term on every node that has committed that index;
- a ReadIndex answer is >= every commit index any node had when the read was requested;
- a snapshot installed on a node holds exactly the entries applied elsewhere at those indexes;
- membership: a node's configuration is the one of the last CONFIG entry in its log (below its first
  index: its snapshot's), its hard state's config is the one in effect at its commit index, and every node
  holding the latest committed CONFIG entry has a configuration whose majorities intersect those of the
  latest committed configuration (see `_check_membership` for why not every pair of nodes).

Logs are compared from index 1: below a node's first index the entries come from its snapshot or state
machine (`Cluster.full_log`).
"""

from __future__ import annotations

from collections.abc import Sequence

from dledger.raft import Membership, ReadState, Ready, Role
from dledger.raft.quorum import majorities_intersect
from dledger.storage_api import Entry, EntryKind
from dledger.testing.cluster import Cluster

__all__ = ["SafetyChecker"]


class SafetyChecker:
    """Observes a cluster (through its hooks and its nodes) and checks the safety properties."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        cluster.on_apply = self._on_apply
        cluster.on_read = self._on_read
        cluster.on_persist = self._on_persist
        cluster.on_restore = self._on_restore
        self.committed_config: tuple[int, Membership] = (0, Membership.initial(cluster.initial_ids))
        self.leaders: dict[int, str] = {}  # term -> the node that led it
        # a wiped node (`Cluster.wipe`) forgets its term and vote: both are kept per store generation
        self.votes: dict[tuple[str, int, int], str] = {}  # (node, generation, term) -> persisted vote
        self.persisted: dict[tuple[str, int], tuple[int, int]] = {}  # (node, generation) -> (term, commit)
        self.leader_tip: dict[tuple[str, int], tuple[int, int]] = {}  # (leader, term) -> (last index, its term)
        self.entry_at: dict[tuple[int, int], tuple[bytes, EntryKind]] = {}  # (index, term) -> entry
        self.committed_terms: list[int] = []  # committed_terms[i - 1] = term of committed index i
        self.committed_seen_in: list[int] = []  # the term in which each commit was first observed
        self.applied_at: dict[int, Entry] = {}
        self.proposals: dict[tuple[str, int], tuple[int, bytes]] = {}  # (node, index) -> (term, data)
        self.acked: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) of acknowledged proposals
        self.reads: dict[tuple[str, bytes], int] = {}  # (node, context) -> min index it may answer
        self.answered_reads = 0
        self.max_commit_seen = 0
        self.core_state: dict[tuple[str, int], tuple[int, int]] = {}  # (node, incarnation) -> (term, commit)

    # ---- test-side records ----

    def record_proposal(self, node_id: str, index: int, term: int, data: bytes) -> None:
        self.proposals[(node_id, index)] = (term, data)

    def record_read(self, node_id: str, context: bytes) -> None:
        self.reads[(node_id, context)] = self.max_commit_seen

    # ---- hooks ----

    def _on_apply(self, node_id: str, e: Entry) -> None:
        first = self.applied_at.setdefault(e.index, e)
        assert first == e, f"state machine safety: {node_id} applied {e} at {e.index}, another node {first}"
        proposed = self.proposals.pop((node_id, e.index), None)
        if proposed is not None and proposed == (e.term, e.data):
            self.acked[e.index] = proposed

    def _on_restore(self, node_id: str, entries: Sequence[Entry]) -> None:
        for e in entries:
            first = self.applied_at.setdefault(e.index, e)
            assert first == e, f"state machine safety: {node_id} restored {e} at {e.index}, another node {first}"

    def _on_read(self, node_id: str, rs: ReadState) -> None:
        floor = self.reads.pop((node_id, rs.context), None)
        assert floor is not None, f"{node_id} answered a read nobody asked for: {rs}"
        assert rs.index >= floor, f"stale read on {node_id}: index {rs.index} < commit {floor} seen before"
        self.answered_reads += 1

    def _on_persist(self, node_id: str, rd: Ready) -> None:
        hs = rd.hard_state
        if hs is None:
            return
        generation = self.cluster.nodes[node_id].generation
        term, commit = self.persisted.get((node_id, generation), (0, 0))
        assert hs.current_term >= term, f"{node_id} persisted term {hs.current_term} after {term}"
        assert hs.commit_index >= commit, f"{node_id} persisted commit {hs.commit_index} after {commit}"
        self.persisted[(node_id, generation)] = (hs.current_term, hs.commit_index)
        if hs.voted_for is not None:
            first = self.votes.setdefault((node_id, generation, hs.current_term), hs.voted_for)
            assert first == hs.voted_for, f"{node_id} voted for {first} and {hs.voted_for} in term {hs.current_term}"

    # ---- the check ----

    def check(self) -> None:
        c = self.cluster
        logs: dict[str, list[Entry]] = {}
        for node_id in c.alive():
            node = c.nodes[node_id]
            core = node.must_core()
            log = core.log
            entries = c.full_log(node_id)
            assert len(entries) == log.last_index(), f"{node_id}: full log ends at {len(entries)}, not {log}"
            logs[node_id] = entries
            term, commit = core.current_term, core.commit_index
            key = (node_id, node.incarnation)
            old_term, old_commit = self.core_state.get(key, (term, commit))
            assert term >= old_term and commit >= old_commit, f"{node_id}: term/commit went back"
            self.core_state[key] = (term, commit)
            assert core.applied <= commit <= log.last_index(), f"{node_id}: not applied <= commit <= last ({log})"
            assert core.applied <= len(node.applied), f"{node_id}: core applied past the state machine"
            for e in entries:
                got = self.entry_at.setdefault((e.index, e.term), (e.data, e.kind))
                assert got == (e.data, e.kind), f"log matching: two entries at ({e.index}, {e.term})"
            self._observe_commit(node_id, entries, commit, term)
            if core.role is Role.LEADER:
                self._check_leader(node_id, term, entries)
            for index, (t, _data) in self.acked.items():
                if index <= commit:
                    assert entries[index - 1].term == t, f"{node_id} lost acknowledged entry {index}"
        self._check_prefixes(logs)
        self._check_membership(logs)

    def _observe_commit(self, node_id: str, entries: list[Entry], commit: int, term: int) -> None:
        known = len(self.committed_terms)
        terms = [e.term for e in entries[:commit]]
        shared = min(known, commit)
        assert terms[:shared] == self.committed_terms[:shared], f"{node_id} committed a different entry"
        if commit > known:
            self.committed_terms.extend(terms[known:])
            self.committed_seen_in.extend([term] * (commit - known))
            for e in entries[known:commit]:
                if e.kind is EntryKind.CONFIG:
                    self.committed_config = (e.index, Membership.decode(e.data))
        self.max_commit_seen = max(self.max_commit_seen, commit)

    def _check_leader(self, node_id: str, term: int, entries: list[Entry]) -> None:
        first = self.leaders.setdefault(term, node_id)
        assert first == node_id, f"election safety: {first} and {node_id} both led term {term}"
        last = len(entries)
        tip = self.leader_tip.get((node_id, term))
        if tip is not None:
            old_last, old_term = tip
            assert last >= old_last, f"leader {node_id} shrank its log in term {term}"
            assert old_last == 0 or entries[old_last - 1].term == old_term, f"leader {node_id} rewrote its log"
        self.leader_tip[(node_id, term)] = (last, entries[-1].term if entries else 0)
        for i, (t, seen_in) in enumerate(zip(self.committed_terms, self.committed_seen_in, strict=True)):
            if seen_in < term:
                assert i < last and entries[i].term == t, (
                    f"leader completeness: {node_id} (term {term}) lacks committed entry {i + 1}"
                )

    def _check_prefixes(self, logs: dict[str, list[Entry]]) -> None:
        ids = sorted(logs)
        for a_pos, a in enumerate(ids):
            ta = [e.term for e in logs[a]]
            for b in ids[a_pos + 1 :]:
                tb = [e.term for e in logs[b]]
                k = min(len(ta), len(tb))
                while k > 0 and ta[k - 1] != tb[k - 1]:
                    k -= 1
                assert ta[:k] == tb[:k], f"log matching: {a} and {b} agree at {k} but differ before"

    def _check_membership(self, logs: dict[str, list[Entry]]) -> None:
        """Each node's configuration matches its log, and agrees (majorities intersect) with the latest
        committed one if the node holds it.

        Not checked, because it is false in correct runs: that *every* pair of nodes' configurations have
        intersecting majorities. A stale node (say an old leader cut off after appending "remove d" to
        {a,b,c,d}) keeps {a,b,c} while the majority commits and then "add e": {a,b} and {c,d,e} are disjoint
        majorities of the two current configurations. Safety holds because the stale node can win no
        election and commit nothing (it lacks a committed entry, and the voters it needs have seen a newer
        term), which is why the check is on nodes that hold the latest committed configuration entry: each
        of their configurations is that one or one change away from it.
        """
        c = self.cluster
        ci, committed = self.committed_config
        ci_term = self.committed_terms[ci - 1] if ci else 0
        for node_id, entries in logs.items():
            core = c.core(node_id)
            initial = Membership.initial(core.config.peers)  # a joining node's: the voters it was told of
            expect, at_commit = initial, initial
            for e in entries:
                if e.kind is EntryKind.CONFIG:
                    expect = Membership.decode(e.data)
                    if e.index <= core.commit_index:
                        at_commit = expect
            if core.recovering_until:
                continue  # its configuration is the committed one it saved; its log lost the entries behind it
            assert core.membership == expect, f"{node_id}: membership {core.membership}, its log says {expect}"
            assert core.committed_membership == at_commit, f"{node_id}: config at commit {at_commit}"
            hs = core.hard_state.config
            assert (Membership.decode(hs) if hs else initial) == at_commit
            holds = ci == 0 or (len(entries) >= ci and entries[ci - 1].term == ci_term)
            if holds:
                assert majorities_intersect(core.membership.voters, committed.voters), (
                    f"{node_id}: configuration {core.membership} and the committed {committed} have disjoint majorities"
                )

    def assert_all_acked_applied(self, node_ids: Sequence[str] | None = None) -> None:
        """Liveness end check: every acknowledged proposal is applied on every node (of `node_ids`)."""
        for node_id, node in self.cluster.nodes.items():
            if node_ids is not None and node_id not in node_ids:
                continue
            for index, (term, data) in self.acked.items():
                assert len(node.applied) >= index, f"{node_id} has not applied acknowledged entry {index}"
                e = node.applied[index - 1]
                assert (e.term, e.data) == (term, data), f"{node_id} applied {e} at acknowledged {index}"
