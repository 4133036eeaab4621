"""`ensure_join_term`: which nodes ask the group for a term floor, and that none starts at term 0 without one.
(The group answering is covered by test_membership_runtime's wiped-disk replacement.)"""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from dledger.commitlog.hardstate import HardStateStore
from dledger.node.config import NodeConfig
from dledger.node.join_term import ensure_join_term
from dledger.storage_api import HardState
from dledger.testing.launcher import free_ports


def _config(tmp_path: pathlib.Path, join: bool) -> NodeConfig:
    a, b, c = free_ports(3)  # nothing listens on a and b: the group is unreachable
    peers = {"n0": f"127.0.0.1:{a}", "n1": f"127.0.0.1:{b}", "n3": f"127.0.0.1:{c}"}
    return NodeConfig(self_id="n3", peers=peers, store_dir=tmp_path / "n3", join=join, rpc_timeout_ms=100)


def _saved(config: NodeConfig) -> HardState:
    with HardStateStore.open(config.store_dir / "state") as store:
        return store.load()


def test_a_joining_node_with_no_term_waits_for_the_group_and_saves_nothing_meanwhile(tmp_path: pathlib.Path) -> None:
    config = _config(tmp_path, join=True)

    async def main() -> None:
        task = asyncio.ensure_future(ensure_join_term(config, attempt_timeout=0.2, pause=0.05))
        done, _ = await asyncio.wait([task], timeout=1.0)
        assert not done  # still asking: it never starts at term 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _saved(config).current_term == 0


def test_only_a_joining_node_without_a_saved_term_asks(tmp_path: pathlib.Path) -> None:
    plain = _config(tmp_path, join=False)
    assert asyncio.run(ensure_join_term(plain)) is None
    joining = _config(tmp_path, join=True)
    with HardStateStore.open(joining.store_dir / "state") as store:
        store.save(HardState(current_term=7, voted_for="n0"))
    assert asyncio.run(ensure_join_term(joining)) is None  # a restart: its term is saved
    assert _saved(joining) == HardState(current_term=7, voted_for="n0")
