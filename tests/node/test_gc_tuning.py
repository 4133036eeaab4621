"""`tune_gc`: raises the collection thresholds and freezes what exists, and cyclic garbage is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dledger.node.tuning import YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_thresholds_are_raised_and_startup_objects_frozen(restore_gc: None) -> None:
    before = gc.get_freeze_count()
    assert tune_gc() == gc.get_threshold()
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() > before  # the objects alive now left the collected generations


def test_cyclic_garbage_made_after_tuning_is_still_collected(restore_gc: None) -> None:
    """No explicit collection: allocating past the young threshold must collect the cycle by itself."""
    assert gc.isenabled()
    tune_gc()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    assert ref() is not None  # a cycle: reference counting alone cannot free it
    keep = [[] for _ in range(2 * YOUNG_THRESHOLD)]  # tracked objects that stay alive: the young count grows
    assert len(keep) == 2 * YOUNG_THRESHOLD
    assert ref() is None


def test_without_freeze_nothing_is_frozen(restore_gc: None) -> None:
    gc.unfreeze()
    tune_gc(freeze=False)
    assert gc.get_freeze_count() == 0
