"""A leader held up by a long write of its own (tens of MiB, a slow disk) keeps its followers from campaigning."""

from __future__ import annotations

import pathlib
import time

from dledger.raft.log import payload_size
from dledger.raft.ready import Ready
from tests.node.cluster_util import LocalGroup, run_group


def test_a_leader_busy_with_a_long_write_keeps_its_group(tmp_path: pathlib.Path) -> None:
    async def body(group: LocalGroup) -> None:
        leader_id = await group.wait_for_leader()
        node = group.servers[leader_id].node
        assert node.core is not None
        term = node.core.current_term
        persist = node._persist

        def slow_disk(rd: Ready) -> None:  # on the I/O thread: only writes too large to run inline get here
            if rd.entries and payload_size(rd.entries) > 4 << 20:
                time.sleep(1.5)  # several election timeouts (200-400 ms)
            persist(rd)

        node._persist = slow_disk  # type: ignore[method-assign]
        index, _ = await node.append([b"a" * (3 << 20), b"b" * (3 << 20)])
        assert group.leader() == leader_id
        assert {s.node.core.current_term for s in group.servers.values() if s.node.core} == {term}
        assert node.stats.keepalive_heartbeats > 0
        await group.wait_for(lambda: all(s.applied_index >= index for s in group.servers.values()), 20, "apply")

    run_group(tmp_path, body)
