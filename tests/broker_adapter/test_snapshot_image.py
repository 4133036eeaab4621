"""The broker tables' snapshot image (`image.py`): restore + the rest of the log equals the whole log from
scratch (a property over random command logs), images are canonical, and a bad image or a crash in the middle
of a restore never leaves a mix: the old tables stay, intact and usable."""

from __future__ import annotations

import io
import os
import pathlib
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dledger.broker_adapter import MessageStore
from dledger.broker_adapter import image as image_mod
from dledger.broker_adapter.tables import LAYOUT
from dledger.node.state_machine import SnapshotError, SnapshottingStateMachine
from dledger.storage_api import Entry, EntryKind
from tests.broker_adapter.group_util import dump
from tests.broker_adapter.snapshot_util import image_of, restored, without_applied
from tests.broker_adapter.test_apply_property import build_log, ops

SAMPLE: list[tuple[object, ...]] = [
    ("put", "A", [(0, "x", 0), (1, "", 250), (1, "y", 0)]),
    ("pop", "A", 3, 100),
    ("put", "B", [(0, "", 0)]),
    ("offset", "A", 1),
    ("tick", "A", 0),
    ("ack", "A", 0, 0, 0),
    ("pop", "B", 1, 0),
]


def test_the_store_is_a_snapshotting_state_machine(tmp_path: pathlib.Path) -> None:
    store = MessageStore(tmp_path / "s")
    assert isinstance(store, SnapshottingStateMachine)
    store.close()


@settings(max_examples=25, deadline=None)
@given(ops, st.data())
def test_restore_then_the_rest_of_the_log_equals_the_whole_log(
    program: list[tuple[object, ...]], data: st.DataObject
) -> None:
    log = build_log(program)
    cut = data.draw(st.integers(0, len(log)))
    noop = data.draw(st.booleans())  # a trailing no-op still counts: the image covers it
    head = [*log[:cut], Entry(cut + 1, 2, b"", EntryKind.NOOP)] if noop else log[:cut]
    tail = [Entry(e.index + noop, e.term, e.data) for e in log[cut:]]
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        whole = MessageStore(root / "whole")
        for entry in [*head, *tail]:
            whole.apply(entry)
        part = MessageStore(root / "part")
        for entry in head:
            part.apply(entry)
        image, index = image_of(part)
        assert index == len(head)
        copy = restored(root / "copy", image, index)
        assert copy.last_applied() == index
        assert image_of(copy) == (image, index)  # canonical: the same tables give the same bytes
        for entry in tail:
            copy.apply(entry)
        assert without_applied(dump(copy)) == without_applied(dump(whole))
        # (a store records `applied` with commands only: the restored one has the image's index at least)
        assert copy.last_applied() == max(whole.last_applied(), index)
        for store in (whole, part, copy):
            store.close()


def sample_store(path: pathlib.Path) -> tuple[MessageStore, list[Entry]]:
    log = build_log(SAMPLE)
    store = MessageStore(path)
    for entry in log[:-2]:
        store.apply(entry)
    return store, log


def test_restore_replaces_existing_tables_whole(tmp_path: pathlib.Path) -> None:
    source, log = sample_store(tmp_path / "src")
    image, index = image_of(source)
    target = MessageStore(tmp_path / "dst")
    other = build_log([("put", "B", [(1, "z", 0)] * 3), ("offset", "B", 0)])
    for entry in other:
        target.apply(entry)
    target.restore(io.BytesIO(image), index)
    assert dump(target) == dump(source)
    for entry in log[index:]:
        target.apply(entry)
        source.apply(entry)
    assert dump(target) == dump(source)
    source.close()
    target.close()
    reopened = MessageStore(tmp_path / "dst")  # the switch is durable: a restart sees the restored tables
    assert dump(reopened) == dump(MessageStore(tmp_path / "src"))


def refused(store: MessageStore, image: bytes, index: int, match: str | None) -> None:
    before = dump(store)
    with pytest.raises(SnapshotError, match=match):
        store.restore(io.BytesIO(image), index)
    assert dump(store) == before
    assert not store.tables.staging_path().exists()


def test_bad_images_are_refused_and_leave_the_old_tables(tmp_path: pathlib.Path) -> None:
    source, log = sample_store(tmp_path / "src")
    image, index = image_of(source)
    store = MessageStore(tmp_path / "dst")
    for entry in log[:3]:
        store.apply(entry)
    refused(store, image, index + 1, "covers index")
    refused(store, b"", index, "truncated")
    refused(store, b"NOTANIMG" + image[8:], index, "magic")
    refused(store, image[:8] + b"\x00\x09" + image[10:], index, "version 9")
    refused(store, image[:10] + (LAYOUT + 1).to_bytes(2, "big") + image[12:], index, "layout")
    refused(store, image + b"x", index, "after its trailer")
    for cut in range(20, len(image), max(1, len(image) // 40)):
        refused(store, image[:cut], index, "truncated|corrupt|unknown table|duplicate|says")
    for at in range(20, len(image), max(1, len(image) // 60)):
        flipped = bytearray(image)
        flipped[at] ^= 0x41
        refused(store, bytes(flipped), index, None)
    for entry in log[3:]:  # the old tables still work
        store.apply(entry)
    assert dump(store) == dump(_whole(tmp_path / "whole", log))
    store.close()


def _whole(path: pathlib.Path, log: list[Entry]) -> MessageStore:
    store = MessageStore(path)
    for entry in log:
        store.apply(entry)
    return store


def test_a_duplicate_record_with_a_valid_crc_is_refused(tmp_path: pathlib.Path) -> None:
    """An image made by something else than `write_image` (a valid CRC over wrong content)."""
    import zlib

    source, _ = sample_store(tmp_path / "src")
    image, index = image_of(source)
    first = image_mod.HEADER.size
    key_len, value_len = image_mod.LENGTHS.unpack_from(image, first + 1)
    record = image[first : first + 1 + image_mod.LENGTHS.size + key_len + value_len]
    body = image[: -4 - 9] + record
    count = int.from_bytes(image[-12:-4], "big") + 1
    forged = body + bytes([image_mod.END]) + count.to_bytes(8, "big")
    forged += zlib.crc32(forged).to_bytes(4, "big")
    refused(MessageStore(tmp_path / "dst"), forged, index, "duplicate")


class Failing(io.BytesIO):
    """A source stream that fails after `limit` bytes (a dying disk or connection)."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def read(self, size: int | None = -1) -> bytes:
        allowed = self.limit - self.tell()
        if allowed <= 0:
            raise OSError("the source failed")
        return super().read(allowed if size is None or size < 0 else min(size, allowed))


def test_a_source_failing_mid_restore_leaves_the_old_tables(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_mod, "CHUNK", 64)
    monkeypatch.setattr(image_mod, "BATCH_BYTES", 128)  # several committed batches before the failure
    source, log = sample_store(tmp_path / "src")
    image, index = image_of(source)
    store = MessageStore(tmp_path / "dst")
    store.apply(log[0])
    before = dump(store)
    with pytest.raises(OSError, match="the source failed"):
        store.restore(Failing(image, len(image) - 10), index)
    assert dump(store) == before and store.last_applied() == 1
    assert not store.tables.staging_path().exists()
    store.restore(io.BytesIO(image), index)  # the next attempt succeeds
    assert dump(store) == dump(source)


def test_a_crash_before_the_switch_keeps_the_old_tables(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, log = sample_store(tmp_path / "src")
    image, index = image_of(source)
    store = MessageStore(tmp_path / "dst")
    store.apply(log[0])
    before = dump(store)

    def crash(*args: object) -> None:
        raise SystemExit("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(SystemExit):
        store.restore(io.BytesIO(image), index)
    monkeypatch.undo()
    assert store.tables.staging_path().exists()  # what the dead process left
    store.close()
    reopened = MessageStore(tmp_path / "dst")
    assert not reopened.tables.staging_path().exists()
    assert dump(reopened) == before


def test_a_crash_after_the_switch_keeps_the_new_tables(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = sample_store(tmp_path / "src")
    image, index = image_of(source)
    store = MessageStore(tmp_path / "dst")
    real_replace = os.replace

    def replace_then_crash(src: str, dst: str) -> None:
        real_replace(src, dst)
        raise SystemExit("killed after the rename")

    monkeypatch.setattr(os, "replace", replace_then_crash)
    with pytest.raises(SystemExit):
        store.restore(io.BytesIO(image), index)
    monkeypatch.undo()
    store.close()
    reopened = MessageStore(tmp_path / "dst")
    assert reopened.last_applied() == index
    assert dump(reopened) == dump(source)
    assert not reopened.tables.staging_path().exists()
