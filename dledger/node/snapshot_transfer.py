"""Moving snapshot files between nodes: the leader's sender and the follower's receiving end.

The core only says *which* snapshot a follower needs (an `InstallSnapshot` with its metadata); the bytes
travel here, in `SendSnapshotChunk` calls of at most `chunk_bytes`, each answered with the offset the
receiver wants next. Rules:
- sender (`send_snapshot`): streams the stored file from the offset the receiver asks for (so a transfer
  that broke resumes where it stopped, even across a restart of the receiver); any failure (the peer down,
  a refused chunk, the snapshot pruned meanwhile) ends the attempt with False, and the core retries later;
- receiver (`SnapshotInbox`): refuses chunks from a term older than its own, checks every chunk (CRC,
  offset, the header against the announced metadata; see `dledger.commitlog.snaptransfer`), and only once
  the whole file is checked and durable hands the core its `InstallSnapshot` message. File work runs on the
  node's I/O thread, which owns the snapshot store's writers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor

from dledger._proto import dledger_pb2 as pb
from dledger.commitlog import SnapshotError, SnapshotOffsetError, SnapshotReceiver, SnapshotStore
from dledger.raft.messages import InstallSnapshot
from dledger.storage_api import SnapshotMeta

__all__ = ["SendChunk", "SnapshotInbox", "send_snapshot"]

log = logging.getLogger(__name__)

SendChunk = Callable[[pb.SnapshotChunk], Awaitable[pb.SnapshotAck]]
_MAX_RESTARTS = 3  # offset corrections accepted per attempt (a resume needs one)


async def send_snapshot(
    store: SnapshotStore,
    io: Executor,
    msg: InstallSnapshot,
    send_chunk: SendChunk,
    chunk_bytes: int,
) -> bool:
    """Stream the snapshot `msg` names to `msg.to_id`; True once the receiver took the last chunk."""
    meta = SnapshotMeta(msg.last_included_index, msg.last_included_term, msg.config)
    loop = asyncio.get_running_loop()
    start, restarts = 0, 0
    while True:
        try:
            chunks = await loop.run_in_executor(io, store.iter_chunks, meta, chunk_bytes, start)
        except SnapshotError as exc:
            log.warning("cannot send snapshot %s to %s: %s", meta, msg.to_id, exc)
            return False
        try:
            restart = None
            while True:
                item = await loop.run_in_executor(io, next, chunks, None)
                # the receiver may already hold every byte (it resumed at the end): an empty last chunk
                offset, data, crc = item if item is not None else (chunks.total_size, b"", 0)
                done = offset + len(data) == chunks.total_size
                ack = await send_chunk(
                    pb.SnapshotChunk(
                        group=msg.group,
                        from_id=msg.from_id,
                        to_id=msg.to_id,
                        term=msg.term,
                        last_included_index=meta.index,
                        last_included_term=meta.term,
                        config=meta.config,
                        total_size=chunks.total_size,
                        offset=offset,
                        data=data,
                        chunk_crc=crc,
                        done=done,
                        file_crc=chunks.file_crc if done else 0,
                    )
                )
                if not ack.ok:
                    if ack.error or ack.next_offset == offset or ack.next_offset > chunks.total_size:
                        log.warning("%s refused snapshot %s at offset %d: %s", msg.to_id, meta, offset, ack.error)
                        return False
                    restart = ack.next_offset  # it holds more (or less) than we thought: resume there
                    break
                if done:
                    return True
        except Exception as exc:  # the peer is down, a call timed out, the file went away
            log.info("sending snapshot %s to %s stopped: %s", meta, msg.to_id, exc)
            return False
        finally:
            await loop.run_in_executor(io, chunks.close)
        restarts += 1
        if restarts > _MAX_RESTARTS:
            return False
        start = restart


class SnapshotInbox:
    """The receiving end on a follower: one transfer at a time (a newer one supersedes an older one)."""

    def __init__(
        self,
        store: SnapshotStore,
        io: Executor,
        self_id: str,
        current_term: Callable[[], int],
        deliver: Callable[[Sequence[pb.PeerMessage]], None],
    ) -> None:
        self._store = store
        self._io = io
        self._self_id = self_id
        self._current_term = current_term
        self._deliver = deliver
        self._receiver: SnapshotReceiver | None = None
        self._lock = asyncio.Lock()
        self.installed = 0  # snapshots received whole and handed to the core

    async def on_chunk(self, chunk: pb.SnapshotChunk) -> pb.SnapshotAck:
        if chunk.term < self._current_term():
            return pb.SnapshotAck(ok=False, error=f"term {chunk.term} is stale (ours is {self._current_term()})")
        async with self._lock:  # chunks of one sender arrive in order; this keeps two senders apart
            try:
                ack, message = await asyncio.get_running_loop().run_in_executor(self._io, self._take, chunk)
            except SnapshotOffsetError as exc:
                return pb.SnapshotAck(ok=False, next_offset=exc.expected)
            except (SnapshotError, ValueError) as exc:
                return pb.SnapshotAck(ok=False, error=str(exc))
        if message is not None:
            self.installed += 1
            self._deliver([message])  # on the loop thread, like every peer message
        return ack

    def _take(self, chunk: pb.SnapshotChunk) -> tuple[pb.SnapshotAck, pb.PeerMessage | None]:
        """On the I/O thread: write one chunk; after the last, publish the file and build the core's message."""
        meta = SnapshotMeta(chunk.last_included_index, chunk.last_included_term, chunk.config)
        receiver = self._receiver
        if receiver is None or receiver.meta != meta or receiver.total_size != chunk.total_size:
            if receiver is not None:
                receiver.close()
            receiver = self._receiver = self._store.receive(meta, chunk.total_size)
        # the receiver checks the offset (SnapshotOffsetError: resume there) and the CRC (refused)
        receiver.write_chunk(chunk.offset, chunk.data, chunk.chunk_crc)
        if not chunk.done:
            return pb.SnapshotAck(ok=True, next_offset=receiver.next_offset), None
        self._receiver = None
        receiver.finish(chunk.file_crc)
        message = pb.PeerMessage(group=chunk.group, from_id=chunk.from_id, to_id=self._self_id)
        body = message.install_snapshot
        body.term = chunk.term
        body.last_included_index = meta.index
        body.last_included_term = meta.term
        body.config = meta.config
        return pb.SnapshotAck(ok=True, next_offset=receiver.total_size), message

    def close(self) -> None:
        """On the I/O thread, at stop: keep a partial file so that the transfer can resume."""
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
