"""Role callbacks: `on_master` / `on_slave` fire on each change, and once at registration when the store is
already in that role (a broker that registers late still learns where it stands)."""

from __future__ import annotations

import pathlib

from dledger.broker_adapter import MessageStore
from dledger.storage_api import Entry, EntryKind
from tests.broker_adapter.group_util import FakeClock
from tests.broker_adapter.single_util import run_single


def test_callbacks_registered_late_fire_at_once_with_the_current_role(tmp_path: pathlib.Path) -> None:
    store = MessageStore(tmp_path / "s")
    seen: list[str] = []
    store.on_master(lambda: seen.append("master early"))
    store.on_slave(lambda: seen.append("slave early"))
    assert seen == []  # the role is not known yet
    store._on_role_change("follower", 1, "other")
    assert seen == ["slave early"]
    store.on_slave(lambda: seen.append("slave late"))
    store.on_master(lambda: seen.append("never"))
    assert seen == ["slave early", "slave late"]
    store._on_role_change("leader", 2, "self")
    assert seen == ["slave early", "slave late"]  # a leader is master only after its term's no-op applied
    store.on_slave(lambda: seen.append("slave while applying"))  # still a slave to the broker
    store.apply(Entry(1, 2, b"", EntryKind.NOOP))
    assert seen[3:] == ["master early", "never"]
    store.on_master(lambda: seen.append("master late"))
    assert seen[-1] == "master late" and store.is_master
    store.on_slave(lambda: seen.append("not now"))
    assert "not now" not in seen
    store.close()


def test_on_master_registered_on_a_running_master_fires_once(tmp_path: pathlib.Path) -> None:
    async def body(store: MessageStore, clock: FakeClock) -> None:
        seen: list[str] = []
        store.on_master(lambda: seen.append("master"))
        store.on_slave(lambda: seen.append("slave"))
        assert seen == ["master"]

    run_single(tmp_path, body)
