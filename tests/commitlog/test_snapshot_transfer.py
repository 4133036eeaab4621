"""InstallSnapshot transfer between two `SnapshotStore`s: chunks, resume, refusals, and a hypothesis round trip."""

from __future__ import annotations

import os
import pathlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.commitlog import (
    SnapshotCorruptError,
    SnapshotMeta,
    SnapshotNotFoundError,
    SnapshotOffsetError,
    SnapshotStore,
    SnapshotTransferError,
)
from dledger.commitlog.snapfile import header_size
from dledger.commitlog.snapshots import snapshot_name

META = SnapshotMeta(300, 7, b"n1,n2,n3")


def leader_with(tmp_path: pathlib.Path, body: bytes, meta: SnapshotMeta = META) -> SnapshotStore:
    store = SnapshotStore(tmp_path / "leader")
    with store.create(meta) as w:
        w.write(body)
        w.commit()
    return store


def body_of(store: SnapshotStore, meta: SnapshotMeta = META) -> bytes:
    with store.open(meta) as r:
        data: bytes = r.read()
    return data


def test_a_chunked_transfer_installs_the_same_file(tmp_path: pathlib.Path) -> None:
    body = os.urandom(100_000)
    leader = leader_with(tmp_path, body)
    follower = SnapshotStore(tmp_path / "follower")
    with leader.iter_chunks(META, chunk_size=4096) as chunks:
        total, crc = chunks.total_size, chunks.file_crc
        assert total == (tmp_path / "leader" / snapshot_name(300, 7)).stat().st_size
        with follower.receive(META, total) as rx:
            assert rx.next_offset == 0
            for offset, data, chunk_crc in chunks:
                rx.write_chunk(offset, data, chunk_crc)
            assert rx.finish(crc) == META
    assert follower.latest() == META
    assert body_of(follower) == body
    assert sorted(os.listdir(tmp_path / "follower")) == [snapshot_name(300, 7)]
    assert (tmp_path / "follower" / snapshot_name(300, 7)).read_bytes() == (
        tmp_path / "leader" / snapshot_name(300, 7)
    ).read_bytes()


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
def test_an_interrupted_transfer_resumes_from_the_partial_file(tmp_path: pathlib.Path, restart: bool) -> None:
    body = os.urandom(50_000)
    leader = leader_with(tmp_path, body)
    follower = SnapshotStore(tmp_path / "follower")
    chunks = leader.iter_chunks(META, chunk_size=3000)
    total, crc = chunks.total_size, chunks.file_crc
    with pytest.raises(ConnectionError), follower.receive(META, total) as rx:
        for n, (offset, data, chunk_crc) in enumerate(chunks):
            if n == 6:
                raise ConnectionError("the stream broke")
            rx.write_chunk(offset, data, chunk_crc)
    chunks.close()
    assert follower.latest() is None
    if restart:
        follower = SnapshotStore(tmp_path / "follower")  # a newer partial survives a restart
    rx = follower.receive(META, total)
    assert rx.next_offset == rx.resumed_from == 6 * 3000
    with leader.iter_chunks(META, chunk_size=3000, start=rx.next_offset) as rest:
        for offset, data, chunk_crc in rest:
            rx.write_chunk(offset, data, chunk_crc)
    rx.finish(crc)
    assert body_of(follower) == body


def test_out_of_order_duplicate_and_gap_chunks_are_refused_with_the_expected_offset(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(10_000))
    follower = SnapshotStore(tmp_path / "follower")
    chunks = list(leader.iter_chunks(META, chunk_size=1000))
    total, crc = leader.iter_chunks(META).total_size, leader.iter_chunks(META).file_crc
    rx = follower.receive(META, total)
    rx.write_chunk(*chunks[0])
    rx.write_chunk(*chunks[1])
    for bad in (chunks[1], chunks[0], chunks[3]):  # duplicate, older, gap
        with pytest.raises(SnapshotOffsetError, match="next expected offset is 2000") as info:
            rx.write_chunk(*bad)
        assert info.value.expected == 2000
    with pytest.raises(SnapshotOffsetError) as early:
        rx.finish(crc)
    assert early.value.expected == 2000
    for c in chunks[2:]:
        rx.write_chunk(*c)
    rx.finish(crc)
    assert follower.latest() == META


def test_a_chunk_with_a_wrong_crc_or_past_the_end_is_refused(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(5000))
    follower = SnapshotStore(tmp_path / "follower")
    src = leader.iter_chunks(META, chunk_size=2000)
    chunks = list(src)
    rx = follower.receive(META, src.total_size)
    offset, data, crc = chunks[0]
    with pytest.raises(SnapshotTransferError, match="fails its CRC"):
        rx.write_chunk(offset, data, crc ^ 1)
    with pytest.raises(SnapshotTransferError, match="fails its CRC"):
        rx.write_chunk(offset, data[:-1] + bytes([data[-1] ^ 1]), crc)
    assert rx.next_offset == 0
    for c in chunks:
        rx.write_chunk(*c)
    with pytest.raises(SnapshotTransferError, match="past the size"):
        rx.write_chunk(rx.next_offset, b"x", zlib.crc32(b"x"))
    rx.finish(src.file_crc)


def test_a_wrong_file_crc_at_finish_is_refused_and_the_partial_dropped(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(5000))
    follower = SnapshotStore(tmp_path / "follower")
    src = leader.iter_chunks(META)
    rx = follower.receive(META, src.total_size)
    for c in src:
        rx.write_chunk(*c)
    with pytest.raises(SnapshotCorruptError, match="file CRC"):
        rx.finish(src.file_crc ^ 0xFF)
    assert os.listdir(tmp_path / "follower") == [] and follower.latest() is None
    assert follower.receive(META, src.total_size).next_offset == 0


def test_bytes_damaged_on_disk_before_finish_are_caught(tmp_path: pathlib.Path) -> None:
    """The partial file is not fsynced while receiving: finish checks what is on disk, not what was sent."""
    leader = leader_with(tmp_path, os.urandom(5000))
    follower = SnapshotStore(tmp_path / "follower")
    src = leader.iter_chunks(META)
    rx = follower.receive(META, src.total_size)
    for c in src:
        rx.write_chunk(*c)
    partial = tmp_path / "follower" / (snapshot_name(300, 7) + ".partial")
    raw = bytearray(partial.read_bytes())
    raw[3000] ^= 4
    partial.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorruptError):
        rx.finish(src.file_crc)
    assert follower.latest() is None


def test_a_header_that_disagrees_with_the_announced_meta_is_refused_at_once(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(5000))
    follower = SnapshotStore(tmp_path / "follower")
    src = leader.iter_chunks(META, chunk_size=100)  # the first chunk holds the whole header
    first = next(src)
    for meta, size in ((SnapshotMeta(300, 7, b"n1,n2,n4"), src.total_size), (META, src.total_size + 1)):
        rx = follower.receive(meta, size)
        with pytest.raises(SnapshotTransferError, match="header disagrees"):
            rx.write_chunk(*first)
        assert rx.next_offset == 0
    with pytest.raises(SnapshotTransferError, match="at least"):
        follower.receive(META, header_size(len(META.config)))
    src.close()


def test_a_new_receive_supersedes_the_old_receiver_and_drops_other_partials(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(5000))
    follower = SnapshotStore(tmp_path / "follower")
    src = leader.iter_chunks(META, chunk_size=1000)
    chunks = list(src)
    other = follower.receive(SnapshotMeta(100, 3), 500)
    rx1 = follower.receive(META, src.total_size)
    assert sorted(os.listdir(tmp_path / "follower")) == [snapshot_name(300, 7) + ".partial"]
    rx1.write_chunk(*chunks[0])
    rx2 = follower.receive(META, src.total_size)
    assert rx2.next_offset == 1000
    for rx in (rx1, other):
        with pytest.raises(SnapshotTransferError, match="receive"):
            rx.write_chunk(*chunks[1])
    for c in chunks[1:]:
        rx2.write_chunk(*c)
    rx2.finish(src.file_crc)
    with pytest.raises(SnapshotTransferError):
        rx2.write_chunk(*chunks[0])


def test_a_partial_at_or_below_the_newest_snapshot_is_dropped_on_open(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(5000))
    follower = leader_with(tmp_path / "f", b"newer", SnapshotMeta(400, 8))
    src = leader.iter_chunks(META)
    rx = follower.receive(META, src.total_size)
    rx.write_chunk(*next(src))
    rx.close()
    src.close()
    SnapshotStore(follower.directory)
    assert os.listdir(follower.directory) == [snapshot_name(400, 8)]


def test_the_sender_refuses_to_send_a_damaged_file(tmp_path: pathlib.Path) -> None:
    leader = leader_with(tmp_path, os.urandom(5000))
    path = tmp_path / "leader" / snapshot_name(300, 7)
    raw = bytearray(path.read_bytes())
    raw[2000] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorruptError, match="not sending"):
        list(leader.iter_chunks(META, chunk_size=1000))
    with pytest.raises(SnapshotNotFoundError):
        leader.iter_chunks(SnapshotMeta(1, 1))
    with pytest.raises(ValueError):
        leader.iter_chunks(META, chunk_size=0)
    with pytest.raises(ValueError):
        leader.iter_chunks(META, start=len(raw) + 1)


@settings(max_examples=40, deadline=None)
@given(
    body=st.binary(max_size=20_000),
    config=st.binary(max_size=100),
    chunk_size=st.integers(1, 9000),
    cut=st.floats(0, 1),
    data=st.data(),
)
def test_any_body_round_trips_in_any_chunk_size_with_a_resume(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    config: bytes,
    chunk_size: int,
    cut: float,
    data: st.DataObject,
) -> None:
    tmp = tmp_path_factory.mktemp("rt")
    meta = SnapshotMeta(data.draw(st.integers(0, 2**64 - 1)), data.draw(st.integers(0, 2**64 - 1)), config)
    leader = SnapshotStore(tmp / "leader")
    with leader.create(meta) as w:
        pieces = data.draw(st.lists(st.integers(1, 5000), max_size=8))
        k = 0
        for p in pieces:
            w.write(body[k : k + p])
            k += p
        w.write(body[k:])
        w.commit()
    assert body_of(leader, meta) == body
    follower = SnapshotStore(tmp / "follower")
    src = leader.iter_chunks(meta, chunk_size=chunk_size)
    stop = int(cut * src.total_size)
    rx = follower.receive(meta, src.total_size)
    for offset, chunk, crc in src:
        if offset >= stop:
            break
        rx.write_chunk(offset, chunk, crc)
    src.close()
    rx.close()
    rx = follower.receive(meta, src.total_size)
    for c in leader.iter_chunks(meta, chunk_size=chunk_size + 7, start=rx.next_offset):
        rx.write_chunk(*c)
    assert rx.finish(src.file_crc) == meta
    assert follower.latest() == meta
    assert body_of(follower, meta) == body
