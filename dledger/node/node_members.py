"""The membership half of the node driver: `Roster` (member addresses, the transport's links) and the
requests `RaftNode` takes from `MembersMixin` (changes, views).

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
from typing import TYPE_CHECKING

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
    from dledger.node.config import NodeConfig
    from dledger.node.peer_transports import Transport

__all__ = ["MembersMixin", "Roster"]

log = logging.getLogger("dledger.node.node")

_MEMBER_OPS = {
    pb.MEMBER_OP_ADD_LEARNER: ConfChangeOp.ADD_LEARNER,
    pb.MEMBER_OP_PROMOTE: ConfChangeOp.PROMOTE,
    pb.MEMBER_OP_REMOVE: ConfChangeOp.REMOVE,
}


class Roster:
    """The group as this node sees it: each member's address (from the configuration in effect, else from
    the peers given at start) and the transport's links, which `follow` keeps on that configuration."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._seen: Membership | None = None  # the configuration the transport's links were last set from

    def check_at_start(self, m: Membership) -> None:
        """Peers given at start are only the initial configuration; say so when the log's differs."""
        cfg = self._config
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

    def address_of(self, m: Membership, node_id: str) -> str:
        return m.voters.get(node_id) or m.learners.get(node_id) or self._config.peers.get(node_id, "")

    def members_pb(self, m: Membership) -> list[pb.Member]:
        address = self.address_of
        return [pb.Member(id=i, address=address(m, i), voter=True) for i in sorted(m.voters)] + [
            pb.Member(id=i, address=address(m, i), voter=False) for i in sorted(m.learners)
        ]

    def peer_addresses(self, m: Membership) -> dict[str, str]:
        out = dict(self._config.peers)
        for node_id in m.members:
            out[node_id] = self.address_of(m, node_id)
        return out

    def follow(self, m: Membership, transport: Transport | None) -> None:
        """Point the transport's links at `m`'s members, once per new configuration."""
        if m is self._seen:
            return
        if self._seen is not None:
            log.info("configuration now %s", m)
        self._seen = m
        if transport is not None:
            transport.set_peers(self.peer_addresses(m))


class MembersMixin:
    """The membership requests of `RaftNode` (see the module docstring); its `Roster` holds the rest."""

    # state owned by RaftNode
    core: RaftCore | None
    transport: Transport | None
    roster: Roster

    if TYPE_CHECKING:

        def _check_running(self) -> None: ...
        def _poke(self) -> None: ...
        def _hint(self, leader_id: str | None) -> LeaderHint: ...
        def _new_waiter(self, first: int, last: int, term: int) -> asyncio.Future[tuple[int, int]]: ...

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
        return index, self.roster.members_pb(core.membership)

    def members(self) -> list[pb.Member]:
        self._check_running()
        core = self.core
        assert core is not None
        if core.role is not Role.LEADER:
            raise NodeNotLeaderError(self._hint(core.leader_id))
        return self.roster.members_pb(core.membership)

    def _on_membership(self, core: RaftCore) -> None:
        self.roster.follow(core.membership, self.transport)
