"""Real `dledger node` processes for tests, on top of the launcher that `dledger cluster` uses."""

from __future__ import annotations

import pathlib
import signal
from collections.abc import Sequence
from typing import Any

from dledger.client.client import DLedgerClient, NodeInfo
from dledger.testing.launcher import LocalProcessGroup
from tests.server.cluster_util import peers_for
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
