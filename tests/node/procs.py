"""Real `dledger node` processes for tests, on top of the launcher that `dledger cluster` uses."""

from __future__ import annotations

import pathlib
import signal
from collections.abc import Sequence
from typing import Any

from dledger.client.client import DLedgerClient, NodeInfo
from dledger.client.client_policy import NotWrittenError, OutcomeUnknownError
from dledger.testing.launcher import LocalProcessGroup
from tests.node.cluster_util import peers_for
from tests.support import wait_for


class ProcessGroup(LocalProcessGroup):
    """A `LocalProcessGroup` of group "t" with client and status helpers for assertions."""

    def __init__(self, root: pathlib.Path, ids: Sequence[str] = ("n0", "n1", "n2"), flush: str = "async") -> None:
        super().__init__(root, peers_for(ids), group="t", flush=flush)

    def kill(self, node_id: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int | None:
        return super().kill(node_id, sig, timeout)

    def client(self, **kwargs: Any) -> DLedgerClient:
        """A client whose per-call deadline tolerates a loaded machine (a late ack is an unknown outcome)."""
        kwargs.setdefault("rpc_timeout", 5.0)
        return DLedgerClient(self.peers, group=self.group, **kwargs)

    def statuses(self) -> dict[str, NodeInfo]:
        with self.client() as client:
            return {s.id: s for s in client.status(timeout=0.5)}

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        live = set(among or self.procs)
        leaders = {s.id for s in self.statuses().values() if s.reachable and s.role == "leader" and s.id in live}
        return next(iter(leaders)) if len(leaders) == 1 else None

    def wait_for_leader(self, timeout: float = 20.0) -> str:
        return wait_for(self.leader, timeout, "a single leader", poll=0.05)

    def log_text(self, node_id: str) -> str:
        path = self.root / f"{node_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def leader_sigkill_keeps_every_acknowledged_append(group: ProcessGroup) -> tuple[str, str]:
    """On a started group: 50 appends, SIGKILL of the leader, 50 more (failures around the failover allowed),
    every acknowledged append read back, and the old leader restarted until it has caught up as a follower.
    Returns (old leader, new leader)."""
    old = group.wait_for_leader()
    acked: dict[int, bytes] = {}
    with group.client(timeout=10) as client:
        for k in range(50):
            data = f"before-{k}".encode()
            acked[client.append(data).index] = data
        group.kill(old)
        new = group.wait_for_leader()
        assert new != old
        for k in range(50):
            data = f"after-{k}".encode()
            try:
                acked[client.append(data).index] = data
            except (OutcomeUnknownError, NotWrittenError):
                pass  # allowed around the failover; only acknowledged appends must survive
        assert len(acked) >= 90
        for index, data in acked.items():
            assert client.get(index).data == data
        group.start(old)  # the old leader rejoins as a follower and catches up
        last = max(acked)
        # one status read for both: a read that times out says role "" (statuses() gives each node 0.5 s)
        wait_for(
            lambda: (s := group.statuses()[old]).applied_index >= last and s.role == "follower",
            what="old leader caught up as a follower",
        )
    return old, new
