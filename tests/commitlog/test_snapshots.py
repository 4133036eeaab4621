"""`SnapshotStore`: local snapshots written, read back, checked, pruned; crashes leave nothing half visible."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import pickle
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.commitlog import (
    SnapshotCorruptError,
    SnapshotMeta,
    SnapshotNotFoundError,
    SnapshotStore,
)
from dledger.commitlog.codec import MAX_CONFIG_BYTES
from dledger.commitlog.snapfile import FIXED, SNAPSHOT_MAGIC, crc_extend, header_size
from dledger.commitlog.snapshots import snapshot_name
from tests.commitlog.conftest import PowerLossOps

META = SnapshotMeta(120, 4, b"members:n1,n2,n3")


def write(store: SnapshotStore, meta: SnapshotMeta, body: bytes, pieces: int = 3) -> None:
    with store.create(meta) as w:
        step = max(1, len(body) // pieces)
        for k in range(0, len(body), step):
            w.write(body[k : k + step])
        w.commit()


def names(directory: pathlib.Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_round_trip_and_reopen(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.latest() is None and store.list() == []
    body = os.urandom(3 << 20) + b"tail"  # crosses the write buffer and read chunk sizes
    write(store, META, body, pieces=7)
    assert store.latest() == META
    with store.open(META) as r:
        assert (r.meta, r.size) == (META, len(body))
        assert r.read() == body
    again = SnapshotStore(tmp_path)
    assert again.list() == [META]
    with again.open(META) as r:
        assert r.read(10) == body[:10] and r.read() == body[10:]
    assert names(tmp_path) == [snapshot_name(120, 4)]


def test_the_writer_is_a_binary_file_for_the_state_machine(tmp_path: pathlib.Path) -> None:
    state = {"k": list(range(1000)), "b": b"\x00\xff" * 50}
    store = SnapshotStore(tmp_path)
    with store.create(META) as w:
        assert w.writable()
        pickle.dump(state, w)
        w.writelines([b"x", bytearray(b"y"), memoryview(b"z")])
        w.commit()
    with store.open(META) as r:
        assert pickle.load(r) == state
        assert r.read() == b"xyz"


def test_an_empty_body_and_an_empty_config(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    meta = SnapshotMeta(0, 0)
    write(store, meta, b"")
    with store.open(meta) as r:
        assert r.read() == b""
    assert (tmp_path / snapshot_name(0, 0)).stat().st_size == header_size(0) + 4


def test_an_exception_while_writing_leaves_nothing(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises(RuntimeError), store.create(META) as w:
        w.write(b"half of it")
        raise RuntimeError("state machine failed")
    with store.create(META) as w:  # no commit: dropped as well
        w.write(b"forgotten")
    assert names(tmp_path) == [] and store.latest() is None
    with pytest.raises(ValueError):
        w.write(b"late")


def test_a_crash_mid_write_leaves_no_visible_snapshot_and_open_cleans_up(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    write(store, SnapshotMeta(10, 1), b"old")
    w = store.create(META)
    w.write(b"x" * 5000)
    w._drain()  # the bytes reach the file; then the process dies (the writer is never closed)
    assert any(n.endswith(".tmp") for n in names(tmp_path))
    assert store.latest() == SnapshotMeta(10, 1)
    again = SnapshotStore(tmp_path)
    assert names(tmp_path) == [snapshot_name(10, 1)]
    assert again.latest() == SnapshotMeta(10, 1)
    w._fd = None  # (the "dead" process's handle: nothing more to do with it)


def test_a_power_cut_at_any_point_keeps_the_old_snapshot_or_the_whole_new_one(tmp_path: pathlib.Path) -> None:
    """Power-loss model: a file survives with its content at its last fdatasync, a name only if the directory
    was fsynced since. A cut before every file operation of a commit must leave the old or the new snapshot."""
    store_dir = tmp_path / "snaps"
    images: list[pathlib.Path] = []

    class Cut(PowerLossOps):
        armed = False

        def _cut(self) -> None:
            if self.armed:
                dst = tmp_path / f"img{len(images)}"
                dst.mkdir()
                for name in self.dirs.get(self.root, set()):
                    (dst / name).write_bytes(self.content.get(os.path.join(self.root, name), b""))
                images.append(dst)

        def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
            self._cut()
            super().pwrite(fd, data, offset)

        def datasync(self, fd: int) -> None:
            self._cut()
            super().datasync(fd)

        def fsync_dir(self, path: str) -> None:
            self._cut()
            super().fsync_dir(path)

        def replace(self, src: str, dst: str) -> None:
            self._cut()
            super().replace(src, dst)

        def remove(self, path: str) -> None:
            self._cut()
            super().remove(path)

    store_dir.mkdir()
    ops = Cut(store_dir)
    store = SnapshotStore(store_dir, keep=1, file_ops=ops)
    old, new = SnapshotMeta(10, 1, b"c1"), SnapshotMeta(20, 2, b"c2")
    write(store, old, b"old body" * 100)
    ops.armed = True
    write(store, new, b"new body" * 300)
    ops._cut()
    assert len(images) >= 6
    seen = set()
    for image in images:
        s = SnapshotStore(image)
        latest = s.latest()
        assert latest in (old, new), image
        with s.open(latest) as r:
            assert r.read() == (b"old body" * 100 if latest == old else b"new body" * 300)
        assert not any(n.endswith(".tmp") for n in names(image))
        seen.add(latest)
    assert seen == {old, new}


def test_pruning_keeps_the_newest(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path, keep=2)
    metas = [SnapshotMeta(i * 10, 1 + i // 3, b"c") for i in (1, 3, 2, 5, 4)]
    for m in metas:
        write(store, m, f"body {m.index}".encode())
    assert store.list() == [SnapshotMeta(40, 2, b"c"), SnapshotMeta(50, 2, b"c")]
    assert store.latest() == SnapshotMeta(50, 2, b"c")
    with pytest.raises(SnapshotNotFoundError):
        store.open(SnapshotMeta(30, 2, b"c"))
    write(store, SnapshotMeta(7, 1, b"c"), b"old")  # an older one committed late is pruned at once
    assert [m.index for m in store.list()] == [40, 50]
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path, keep=0)


def test_an_open_reader_survives_pruning(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path, keep=1)
    write(store, META, b"still readable")
    r = store.open(META)
    write(store, SnapshotMeta(200, 5), b"newer")
    assert store.list() == [SnapshotMeta(200, 5)]
    assert r.read() == b"still readable"
    r.close()


def corrupt(path: pathlib.Path, offset: int, value: bytes | None = None) -> None:
    raw = bytearray(path.read_bytes())
    if value is None:
        raw[offset] ^= 0x10
    else:
        raw[offset : offset + len(value)] = value
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["body", "trailer"])
def test_a_damaged_body_is_refused_by_open(tmp_path: pathlib.Path, where: str) -> None:
    store = SnapshotStore(tmp_path)
    write(store, META, b"b" * 1000)
    path = tmp_path / snapshot_name(120, 4)
    corrupt(path, header_size(len(META.config)) + 500 if where == "body" else path.stat().st_size - 2)
    assert store.latest() == META  # the header is intact
    with pytest.raises(SnapshotCorruptError, match="CRC"):
        store.open(META)
    with store.open(META, verify=False) as r, pytest.raises(SnapshotCorruptError, match="CRC"):
        r.read()  # and the reader checks again as it streams


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: corrupt(p, 0, b"XXXX"), "magic"),
        (lambda p: corrupt(p, 4, b"\x09\x00"), "version"),
        (lambda p: corrupt(p, 10), "header fails its CRC"),
        (lambda p: corrupt(p, FIXED.size + 2), "header fails its CRC"),
        (lambda p: corrupt(p, 32, struct.pack("<I", MAX_CONFIG_BYTES + 1)), "over the limit"),
        (lambda p: p.write_bytes(p.read_bytes()[:-3]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:20]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[: FIXED.size + 5]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes() + b"junk"), "trailing"),
        (lambda p: p.write_bytes(b""), "truncated"),
    ],
)
def test_a_damaged_header_or_size_is_refused_everywhere(tmp_path: pathlib.Path, damage: object, match: str) -> None:
    store = SnapshotStore(tmp_path)
    write(store, META, b"b" * 100)
    damage(tmp_path / snapshot_name(120, 4))  # type: ignore[operator]
    for call in (store.latest, store.list, lambda: store.open(META), lambda: store.iter_chunks(META)):
        with pytest.raises(SnapshotCorruptError, match=match):
            call()


def test_a_file_whose_header_disagrees_with_its_name_or_the_request_is_refused(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    write(store, META, b"body")
    os.rename(tmp_path / snapshot_name(120, 4), tmp_path / snapshot_name(121, 4))
    with pytest.raises(SnapshotCorruptError, match="header says index 120"):
        store.latest()
    os.rename(tmp_path / snapshot_name(121, 4), tmp_path / snapshot_name(120, 4))
    with pytest.raises(SnapshotCorruptError, match="config"):
        store.open(SnapshotMeta(120, 4, b"other config"))


@pytest.mark.parametrize(
    "meta",
    [SnapshotMeta(-1, 0), SnapshotMeta(1, 2**64), SnapshotMeta(1, 1, b"c" * (MAX_CONFIG_BYTES + 1))],
)
def test_a_bad_meta_is_refused_before_anything_is_written(tmp_path: pathlib.Path, meta: SnapshotMeta) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError):
        store.create(meta)
    with pytest.raises(ValueError):
        store.receive(meta, 1000)
    assert names(tmp_path) == []


def test_the_file_layout_is_as_documented(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    write(store, META, b"BODY")
    raw = (tmp_path / snapshot_name(120, 4)).read_bytes()
    magic, version, flags, index, term, body_len, config_len = FIXED.unpack_from(raw)
    assert (magic, version, flags, index, term, body_len, config_len) == (SNAPSHOT_MAGIC, 1, 0, 120, 4, 4, 16)
    n = FIXED.size + config_len
    assert raw[FIXED.size : n] == META.config
    assert struct.unpack_from("<I", raw, n)[0] == zlib.crc32(raw[:n])
    assert raw[n + 4 : n + 8] == b"BODY"
    assert struct.unpack_from("<I", raw, len(raw) - 4)[0] == zlib.crc32(raw[:-4])


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=200), b=st.binary(max_size=3000))
def test_crc_extend_is_crc32_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert crc_extend(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc_extend_over_large_lengths() -> None:
    zeros = bytes(5 << 20)
    assert crc_extend(zlib.crc32(b"head"), zlib.crc32(zeros), len(zeros)) == zlib.crc32(b"head" + zeros)


def test_reader_wraps_into_text(tmp_path: pathlib.Path) -> None:
    store = SnapshotStore(tmp_path)
    write(store, META, b"line one\nline two\n")
    with store.open(META) as r:
        assert io.TextIOWrapper(r, encoding="utf-8").readlines() == ["line one\n", "line two\n"]


def test_a_failed_fsync_at_commit_leaves_nothing_visible(tmp_path: pathlib.Path) -> None:
    ops = PowerLossOps(tmp_path)
    store = SnapshotStore(tmp_path, file_ops=ops)
    ops.fail = lambda kind, path: errno.EIO if kind == "datasync" else None
    with pytest.raises(OSError), store.create(META) as w:
        w.write(b"body")
        w.commit()
    assert names(tmp_path) == [] and store.latest() is None
    ops.fail = lambda kind, path: None
    write(store, META, b"body")
    assert store.latest() == META
