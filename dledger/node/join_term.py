"""A joining node's term floor: learnt from the group before its core starts.

Why: a node re-added under its old id after its store was lost (docs/operating.md: remove it, wipe it,
start it with `--join`, add it again) starts with an empty store. At term 0 it would accept the appends of
any stale leader, one cut off since before the node's removal whose configuration still lists the old
store as a voter, and its acknowledgements would count toward that leader's commit: committed entries
overwritten (the raft simulation found it; tests/raft/test_membership.py shows it step by step). Started
at a term at least the one in which its removal committed, it refuses every leader of an older term (and
tells it the newer term), while every leader of that term or a newer one has the removal in its log and
counts the node only after adding it again.

How: a read the leader confirms with a quorum (ReadIndex) after the removal committed answers with the
leader's term, which is then at least the removal's. The operator's procedure orders the two: the node
is started with `--join` after its removal was acknowledged.

Invariants: only a joining node whose hard state holds no term asks (a restart after that finds its
term saved); the term is saved, durably, before the core is built; the node keeps asking (logging why)
until a leader answers, and never starts at term 0; a stop while it waits cancels the wait.
"""

from __future__ import annotations

import asyncio
import logging

from dledger.client.aio_client import AsyncDLedgerClient, StubSource
from dledger.client.client_policy import DLedgerError
from dledger.commitlog.hardstate import HardStateStore
from dledger.node.config import NodeConfig
from dledger.storage_api import HardState

__all__ = ["ensure_join_term"]

log = logging.getLogger(__name__)


def _saved_term(config: NodeConfig) -> int:
    with HardStateStore.open(config.store_dir / "state") as store:
        return store.load().current_term


def _save_term(config: NodeConfig, term: int) -> None:
    with HardStateStore.open(config.store_dir / "state") as store:
        if store.load().current_term == 0:
            store.save(HardState(current_term=term))


async def ensure_join_term(
    config: NodeConfig, *, attempt_timeout: float = 2.0, pause: float = 0.5, stubs: StubSource | None = None
) -> int | None:
    """For a joining node with no saved term: ask the group (every peer but this node) for a term its
    leader confirmed, save it as the node's current term and return it. None when nothing was needed.
    `stubs`: how the group is reached (gRPC by default; see `AsyncDLedgerClient`)."""
    if not config.join:
        return None
    loop = asyncio.get_running_loop()
    if await loop.run_in_executor(None, _saved_term, config) > 0:
        return None
    others = {i: a for i, a in config.peers.items() if i != config.self_id}
    if not others:
        raise ValueError("a joining node needs the addresses of the running group in its peers")
    rpc_timeout = config.rpc_timeout_ms / 1000
    client = AsyncDLedgerClient(
        others,
        group=config.group,
        timeout=attempt_timeout,
        rpc_timeout=rpc_timeout,
        tls=config.tls,
        streaming=False,
        stubs=stubs,
    )
    try:
        term, attempts = 0, 0
        while term == 0:  # a leader's term is never 0: a reply without one (an older node) counts as no answer
            attempts += 1
            try:
                term = await client.confirmed_term()
            except DLedgerError as exc:
                if attempts == 1 or attempts % 10 == 0:
                    log.warning("joining: waiting for a leader of %s to confirm its term (%s)", sorted(others), exc)
            if term == 0:
                await asyncio.sleep(pause)
    finally:
        await client.close()
    await loop.run_in_executor(None, _save_term, config, term)
    log.info("joining: starting at term %d, confirmed by the group's leader", term)
    return term
