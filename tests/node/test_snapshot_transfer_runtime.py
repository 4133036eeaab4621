"""The node's snapshot transfer: `send_snapshot` streams a stored file into a `SnapshotInbox`, resumes an
interrupted transfer where the receiver stopped, and the inbox hands Raft its message only at the end."""

from __future__ import annotations

import asyncio
import pathlib
from concurrent.futures import ThreadPoolExecutor

from dledger._proto import dledger_pb2 as pb
from dledger.commitlog import SnapshotStore
from dledger.node.snapshot_transfer import SnapshotInbox, send_snapshot
from dledger.raft.messages import InstallSnapshot
from dledger.storage_api import SnapshotMeta

BODY = bytes(range(256)) * 40  # 10 KiB: several 4 KiB chunks


def test_an_interrupted_transfer_resumes_and_delivers_once(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        meta = SnapshotMeta(50, 3, b'{"v":1}')
        leader = SnapshotStore(tmp_path / "leader")
        with leader.create(meta) as writer:
            writer.write(BODY)
            writer.commit()
        io = ThreadPoolExecutor(1)
        delivered: list[pb.PeerMessage] = []
        inbox = SnapshotInbox(SnapshotStore(tmp_path / "follower"), io, "f", lambda: 3, delivered.extend)
        msg = InstallSnapshot(term=3, from_id="l", to_id="f", group="g", last_included_index=50,
                              last_included_term=3, config=meta.config)  # fmt: skip
        offsets: list[int] = []
        budget = [2]

        async def flaky(chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
            if budget[0] == 0:
                raise ConnectionError("the link broke")
            budget[0] -= 1
            offsets.append(chunk.offset)
            return await inbox.on_chunk(chunk)

        assert not await send_snapshot(leader, io, msg, flaky, 4096)
        assert offsets == [0, 4096] and not delivered
        budget[0] = 100
        offsets.clear()
        assert await send_snapshot(leader, io, msg, flaky, 4096)
        # the first chunk of the second attempt is refused with the offset to resume at, then it goes on there
        assert offsets[0] == 0 and offsets[1] == 8192 and offsets == sorted(offsets)
        assert len(delivered) == 1 and delivered[0].install_snapshot.last_included_index == 50
        received = SnapshotStore(tmp_path / "follower")
        assert received.latest() == meta
        with received.open(meta) as src:
            assert src.read() == BODY
        # a stale term is refused without touching anything
        stale = pb.SnapshotChunk(term=2, last_included_index=60, last_included_term=2, total_size=100)
        ack = await inbox.on_chunk(stale)
        assert not ack.ok and "stale" in ack.error
        io.shutdown()

    asyncio.run(main())


def test_a_corrupt_chunk_is_refused_and_the_sender_gives_up(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        meta = SnapshotMeta(7, 1, b"")
        leader = SnapshotStore(tmp_path / "leader")
        with leader.create(meta) as writer:
            writer.write(BODY)
            writer.commit()
        io = ThreadPoolExecutor(1)
        delivered: list[pb.PeerMessage] = []
        inbox = SnapshotInbox(SnapshotStore(tmp_path / "follower"), io, "f", lambda: 1, delivered.extend)
        msg = InstallSnapshot(term=1, from_id="l", to_id="f", group="g", last_included_index=7, last_included_term=1)

        async def corrupting(chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
            if chunk.offset == 4096:
                chunk.data = b"\x00" + chunk.data[1:]
            return await inbox.on_chunk(chunk)

        assert not await send_snapshot(leader, io, msg, corrupting, 4096)
        assert not delivered and SnapshotStore(tmp_path / "follower").latest() is None
        io.shutdown()

    asyncio.run(main())
