"""The `SnapshottingStateMachine` contract (dledger/node/state_machine.py), as one conformance suite that
every implementation passes: the reference `ListStateMachine` and the broker adapter's `MessageStore`."""

from __future__ import annotations

import io
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dledger.broker_adapter import MessageStore
from dledger.node.state_machine import (
    ListStateMachine,
    SnapshotError,
    SnapshottingStateMachine,
    StateMachine,
    require_snapshotting,
)
from dledger.storage_api import Entry, EntryKind
from tests.broker_adapter.group_util import dump
from tests.broker_adapter.snapshot_util import without_applied
from tests.broker_adapter.test_apply_property import build_log


@dataclass
class Impl:
    make: Callable[[pathlib.Path], SnapshottingStateMachine]
    entries: list[Entry]
    observe: Callable[[Any], object]


def _plain_entries() -> list[Entry]:
    out = []
    for i in range(1, 21):
        kind = EntryKind.NOOP if i % 7 == 1 else EntryKind.NORMAL
        out.append(Entry(i, 1 + i // 10, b"" if kind == EntryKind.NOOP else f"e{i}".encode() * i, kind))
    return out


def _broker_entries() -> list[Entry]:
    program: list[tuple[object, ...]] = [
        ("put", "A", [(0, "x", 0), (1, "", 250)]),
        ("pop", "A", 2, 100),
        ("offset", "B", 1),
        ("put", "B", [(1, "y", 0)] * 3),
        ("tick", "A", 0),
        ("pop", "B", 3, 0),
    ]
    datas = [(e.data, EntryKind.NORMAL) for e in build_log(program)]
    datas.insert(3, (b"", EntryKind.NOOP))  # a new term's no-op in the middle, and one at the end
    datas.append((b"", EntryKind.NOOP))
    return [Entry(i, 1, data, kind) for i, (data, kind) in enumerate(datas, 1)]


IMPLS = {
    "list": Impl(lambda _: ListStateMachine(), _plain_entries(), lambda m: (m.last_applied(), list(m.entries))),
    "broker": Impl(lambda p: MessageStore(p), _broker_entries(), lambda m: without_applied(dump(m))),
}


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Any:
    chosen = IMPLS[request.param]
    made: list[Any] = []
    counter = iter(range(1000))

    def make() -> Any:
        machine = chosen.make(tmp_path / f"m{next(counter)}")
        made.append(machine)
        return machine

    yield make, chosen
    for machine in made:
        close = getattr(machine, "close", None)
        if close is not None:
            close()


def applied(make: Callable[[], Any], entries: list[Entry]) -> Any:
    machine = make()
    for entry in entries:
        machine.apply(entry)
    return machine


def image(machine: SnapshottingStateMachine) -> tuple[bytes, int]:
    out = io.BytesIO()
    index = machine.snapshot(out)
    return out.getvalue(), index


def test_an_image_restores_the_same_state_and_the_rest_of_the_log_applies_on_it(impl: Any) -> None:
    make, chosen = impl
    entries = chosen.entries
    whole = applied(make, entries)
    for cut in (0, 1, len(entries) // 2, len(entries) - 1, len(entries)):
        part = applied(make, entries[:cut])
        data, index = image(part)
        assert index == cut  # the last entry given to apply, even a no-op
        copy = make()
        copy.restore(io.BytesIO(data), index)
        assert copy.last_applied() == index
        assert chosen.observe(copy) == chosen.observe(part)
        for entry in entries[cut:]:
            copy.apply(entry)
        assert chosen.observe(copy) == chosen.observe(whole)


def test_bad_images_are_refused_and_the_old_state_stays(impl: Any) -> None:
    make, chosen = impl
    entries = chosen.entries
    data, index = image(applied(make, entries))
    target = applied(make, entries[:3])
    before = chosen.observe(target)
    bad = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 25))]
    bad += [data + b"\0", bytes([data[0] ^ 1]) + data[1:], data[:-1] + bytes([data[-1] ^ 0x80])]
    for raw in bad:
        with pytest.raises(SnapshotError):
            target.restore(io.BytesIO(raw), index)
        assert chosen.observe(target) == before
    with pytest.raises(SnapshotError, match="index"):
        target.restore(io.BytesIO(data), index + 1)
    assert chosen.observe(target) == before
    for entry in entries[3:]:
        target.apply(entry)
    assert chosen.observe(target) == chosen.observe(applied(make, entries))


class Dying(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= len(self.getvalue()) // 2:
            raise ConnectionError("the sender died")
        return super().read(1 if size is None or size < 0 else min(size, 1))


def test_a_source_dying_mid_restore_leaves_the_old_state(impl: Any) -> None:
    make, chosen = impl
    data, index = image(applied(make, chosen.entries))
    target = applied(make, chosen.entries[:2])
    before = chosen.observe(target)
    with pytest.raises(ConnectionError):
        target.restore(Dying(data), index)
    assert chosen.observe(target) == before and target.last_applied() == 2


def test_a_machine_without_snapshots_is_named_clearly() -> None:
    class Plain:
        def last_applied(self) -> int:
            return 0

        def apply(self, entry: Entry) -> None:
            pass

    machine: StateMachine = Plain()
    assert isinstance(machine, StateMachine) and not isinstance(machine, SnapshottingStateMachine)
    with pytest.raises(TypeError, match="Plain cannot be snapshotted: it has no snapshot / restore"):
        require_snapshotting(machine)
    reference = ListStateMachine()
    assert require_snapshotting(reference) is reference


def test_the_list_machine_refuses_a_gap() -> None:
    machine = ListStateMachine()
    machine.apply(Entry(1, 1, b"a"))
    with pytest.raises(ValueError, match="entry 3 applied after 1"):
        machine.apply(Entry(3, 1, b"c"))
