"""Group commit in the driver: concurrent proposals share a Ready, yet each client keeps exactly its own range."""

from __future__ import annotations

import asyncio
import itertools
import pathlib
from collections.abc import Sequence

from dledger.raft.messages import AppendEntries, Message
from dledger.storage_api import EntryKind
from tests.node.cluster_util import LocalGroup, peers_for

IDS = ("n0", "n1", "n2")


def test_concurrent_appends_share_readies_and_each_gets_its_own_contiguous_range(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        group = LocalGroup(tmp_path, peers_for(IDS))
        await group.start_all()
        try:
            leader_id = await group.wait_for_leader()
            leader = group.servers[leader_id]
            await leader.append([b"warm-up"])
            requests = [[f"r{k}-{j}".encode() for j in range(1 + k % 5)] for k in range(60)]
            sent: list[AppendEntries] = []
            send = leader.node._send

            def recording_send(messages: Sequence[Message]) -> None:
                sent.extend(m for m in messages if isinstance(m, AppendEntries) and m.entries)
                send(messages)

            leader.node._send = recording_send  # type: ignore[method-assign]
            results = await asyncio.gather(*(leader.append(items) for items in requests))
            spans = sorted(
                (first, first + len(items) - 1, k)
                for k, ((first, _), items) in enumerate(zip(results, requests, strict=True))
            )
            for (_, last, _), (first, _, _) in itertools.pairwise(spans):
                assert first == last + 1  # disjoint and contiguous
            expected_last = spans[-1][1]
            for node_id in IDS:
                machine = group.machines[node_id]
                await group.wait_for(lambda m=machine: bool(m.applied) and m.applied[-1].index >= expected_last,
                                     what=f"{node_id} applied everything")  # fmt: skip
                by_index = {e.index: e for e in machine.applied}
                for k, ((first, term), items) in enumerate(zip(results, requests, strict=True)):
                    got = [by_index[first + j] for j in range(len(items))]
                    assert [e.data for e in got] == items, f"request {k} on {node_id}"
                    assert all(e.term == term and e.kind == EntryKind.NORMAL for e in got)
            leader.node._send = send  # type: ignore[method-assign]
            for follower in set(IDS) - {leader_id}:
                appends = [m for m in sent if m.to_id == follower]
                # proposals pending together went out together, not one AppendEntries per request
                assert 0 < len(appends) < len(requests) // 4
        finally:
            await group.stop_all()

    asyncio.run(main())
