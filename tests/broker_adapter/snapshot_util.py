"""Helpers for snapshot tests: images as bytes, and a store without a server that reads bodies from a list of
entries (a replica's log, optionally starting after a snapshot index, as after InstallSnapshot)."""

from __future__ import annotations

import io
import pathlib
from collections.abc import Sequence

from dledger.broker_adapter import MessageStore
from dledger.broker_adapter.reader import Reader
from dledger.storage_api import CompactedError, Entry, UnavailableError


def image_of(store: MessageStore) -> tuple[bytes, int]:
    out = io.BytesIO()
    index = store.snapshot(out)
    return out.getvalue(), index


def restored(path: pathlib.Path, image: bytes, index: int) -> MessageStore:
    store = MessageStore(path)
    store.restore(io.BytesIO(image), index)
    return store


def attach_log(store: MessageStore, entries: Sequence[Entry], first_index: int = 1) -> None:
    """Serve the store's reads from `entries` (index i at position i - 1); below `first_index` they are gone."""

    async def read_entry(index: int) -> Entry:
        if index < first_index:
            raise CompactedError(f"index {index} is compacted (first index {first_index})")
        if index > len(entries):
            raise UnavailableError(f"index {index} is not committed here")
        return entries[index - 1]

    store.reader = Reader(store.tables, read_entry, lambda: first_index)


def without_applied(tables: dict[str, list[tuple[bytes, bytes]]]) -> dict[str, list[tuple[bytes, bytes]]]:
    """A `group_util.dump` without `meta[applied]` (written by commands only, so it may lag behind no-ops)."""
    return {**tables, "meta": [(k, v) for k, v in tables["meta"] if k != b"applied"]}
