"""The membership half of the node driver (`RaftNode` mixes it in): changes, views and peer addresses.

Rules (the core's side is in `dledger/raft/conf_change.py`):
- the peers given at start are the initial configuration only; after that the log rules, and a node whose
  flags disagree with it logs which one is in effect;
- a change is validated against the current configuration first (an invalid one is "invalid request",
  never proposed), then proposed; refusals by the core's rules (another change in flight, no commit in
  this term yet, a lagging learner) are "busy" (nothing proposed, retry); the caller hears "ok" only once
  the CONFIG entry is committed and applied here;
- an address comes from the configuration, else from the peers given at start; the transport links and
  the peer servicer's accepted senders follow every change of the configuration in effect (which takes
  effect when appended, committed or not).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dledger._proto import dledger_pb2 as pb
from dledger.node.config import check_member
from dledger.node.errors import BusyError, LeaderHint, NodeNotLeaderError
from dledger.raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeOp,
    Membership,
    NotLeaderError,
    RaftCore,
    Role,
    apply_change,
)

if TYPE_CHECKING:
    from collections import deque

    from dledger.node.config import NodeConfig
    from dledger.node.peer_transports import Transport

__all__ = ["MembersMixin"]

log = logging.getLogger("dledger.node.node")

_MEMBER_OPS = {
    pb.MEMBER_OP_ADD_LEARNER: ConfChangeOp.ADD_LEARNER,
    pb.MEMBER_OP_PROMOTE: ConfChangeOp.PROMOTE,
    pb.MEMBER_OP_REMOVE: ConfChangeOp.REMOVE,
}


class MembersMixin:
    """Membership work of `RaftNode` (see the module docstring)."""

    # state owned by RaftNode
    config: NodeConfig
    core: RaftCore | None
    transport: Transport | None
    _waiters: deque[Any]
    _membership_seen: Membership | None

    if TYPE_CHECKING:

        def _check_running(self) -> None: ...
        def _poke(self) -> None: ...
        def _hint(self, leader_id: str | None) -> LeaderHint: ...
        def _new_waiter(self, first: int, last: int, term: int) -> asyncio.Future[tuple[int, int]]: ...

    def _check_membership_at_start(self, core: RaftCore) -> None:
        """Peers given at start are only the initial configuration; say so when the log's differs."""
        m, cfg = core.membership, self.config
        if cfg.join:
            return
        if set(m.voters) != set(cfg.peers):
            log.warning(
                "the group's configuration in this node's log (voters %s, learners %s) differs from the peers "
                "given at start (%s): the log's configuration is in effect",
                sorted(m.voters),
                sorted(m.learners),
                sorted(cfg.peers),
            )
        if cfg.self_id not in m.members:
            log.warning("node %s is not a member of its group's configuration: it was removed", cfg.self_id)

    async def change_membership(self, op: int, node_id: str, address: str) -> tuple[int, list[pb.Member]]:
        self._check_running()
        core = self.core
        assert core is not None
        kind = _MEMBER_OPS.get(op)  # type: ignore[call-overload]
        if kind is None:
            raise ValueError(f"unknown membership operation {op}")
        check_member(node_id, address)  # before anything is proposed: a bad id or address lives in the log
        change = ConfChange(kind, node_id, address)
        try:
            apply_change(core.membership, change)
        except ConfChangeError as exc:
            raise ValueError(exc.reason) from None
        try:
            p = core.propose_conf_change(change)
        except NotLeaderError as exc:
            raise NodeNotLeaderError(self._hint(exc.leader_id)) from None
        except ConfChangeError as exc:
            raise BusyError(exc.reason) from None
        future = self._new_waiter(p.first_index, p.last_index, p.term)
        self._poke()
        index, _ = await future
        return index, self._members_pb(core.membership)

    def members(self) -> list[pb.Member]:
        self._check_running()
        core = self.core
        assert core is not None
        if core.role is not Role.LEADER:
            raise NodeNotLeaderError(self._hint(core.leader_id))
        return self._members_pb(core.membership)

    def _members_pb(self, m: Membership) -> list[pb.Member]:
        address = self._address_of
        return [pb.Member(id=i, address=address(m, i), voter=True) for i in sorted(m.voters)] + [
            pb.Member(id=i, address=address(m, i), voter=False) for i in sorted(m.learners)
        ]

    def _address_of(self, m: Membership, node_id: str) -> str:
        return m.voters.get(node_id) or m.learners.get(node_id) or self.config.peers.get(node_id, "")

    def _peer_addresses(self) -> dict[str, str]:
        core = self.core
        assert core is not None
        m = core.membership
        out = dict(self.config.peers)
        for node_id in m.members:
            out[node_id] = self._address_of(m, node_id)
        return out

    def _on_membership(self, core: RaftCore) -> None:
        m = core.membership
        if m is self._membership_seen:
            return
        if self._membership_seen is not None:
            log.info("configuration now %s", m)
        self._membership_seen = m
        peers = self._peer_addresses()
        if self.transport is not None:
            self.transport.set_peers(peers)
