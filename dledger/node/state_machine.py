"""The state machine interface a node applies committed entries to (the broker adapter implements it).

Contract of every `StateMachine`: `apply(entry)` is called for every committed entry (NORMAL, NOOP and CONFIG
alike; ignore the kinds you do not use) in index order, exactly once per index per process start, from the
node's event loop thread; it must not block for long. `last_applied()` is read once at start: entries up to
it are not applied again, so a durable state machine resumes where it stopped and a volatile one returns 0
and sees everything.

Snapshots are an optional capability, `SnapshottingStateMachine` (a state machine without it cannot be used
with a log that is compacted by snapshots; `require_snapshotting` says so). Both calls come from the event
loop thread, between applies, so the state cannot change during them:
- `snapshot(out)` writes a self-contained image of the state and returns the index `I` it covers: the state
  after applying exactly the entries `1..I`, where `last_applied() <= I <=` the last index given to `apply`
  (ideally that last index: entries that changed nothing still count). The image must be consistent (one
  point in time) and should be streamed to `out` in pieces, not built whole in memory, for large states.
  The runtime owns the file, its CRC and the `SnapshotMeta`; the image is the machine's own format, which
  should be versioned, because it is read back by other replicas and later versions.
- `restore(src, index)` replaces the WHOLE state with an image that `snapshot` returned `index` for; after
  it, `last_applied() == index` and the next `apply` gets `index + 1`. The image is untrusted input: a
  truncated, corrupt or mismatched one (another index, format or version) raises `SnapshotError` (or the
  error `src` raised) and leaves the old state untouched and usable. It is crash-safe: a crash during the
  call leaves either the old state or the new one, never a mix (a durable machine builds the new state
  aside and switches atomically; a volatile one starts empty anyway).

Invariants: `restore(snapshot())` of the same image on any replica gives the same state; restoring an image
at `I` and applying `I+1..N` gives the state of applying `1..N` from scratch.

`ListStateMachine` is a small in-memory reference implementation (it keeps every entry's data), for tests.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Protocol, runtime_checkable

from dledger.commitlog.crc import body_crc
from dledger.storage_api import Entry, EntryKind

__all__ = ["ListStateMachine", "SnapshotError", "SnapshottingStateMachine", "StateMachine", "require_snapshotting"]


@runtime_checkable
class StateMachine(Protocol):
    def last_applied(self) -> int: ...

    def apply(self, entry: Entry) -> None: ...


@runtime_checkable
class SnapshottingStateMachine(StateMachine, Protocol):
    def snapshot(self, out: BinaryIO) -> int:
        """Write an image of the state to `out`; return the index it covers (see the module docstring)."""
        ...

    def restore(self, src: BinaryIO, index: int) -> None:
        """Replace the whole state with the image in `src`, taken at `index`; all or nothing."""
        ...


class SnapshotError(ValueError):
    """An image that cannot be restored: truncated, corrupt, or of another index, format or version."""


def require_snapshotting(machine: StateMachine) -> SnapshottingStateMachine:
    """`machine` as a `SnapshottingStateMachine`, or a `TypeError` that names what it lacks."""
    if isinstance(machine, SnapshottingStateMachine):
        return machine
    missing = [name for name in ("snapshot", "restore") if not callable(getattr(machine, name, None))]
    raise TypeError(
        f"state machine {type(machine).__qualname__} cannot be snapshotted: it has no {' / '.join(missing)} "
        "(see dledger.node.state_machine.SnapshottingStateMachine); turn snapshots off or implement them"
    )


_LIST_MAGIC = b"DLLSTSM1"
_LIST_HEAD = struct.Struct(">8sQQ")  # magic, index, entry count
_LIST_ITEM = struct.Struct(">QI")  # entry index, data length
_U32 = struct.Struct(">I")


class ListStateMachine:
    """Keeps `(index, data)` of every applied NORMAL entry in memory; snapshots with a CRC-checked image.

    Image: magic, index, count, then per entry its index, length and data, then a CRC32 of all that."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, bytes]] = []
        self._applied = 0

    def last_applied(self) -> int:
        return self._applied

    def apply(self, entry: Entry) -> None:
        if entry.index != self._applied + 1:
            raise ValueError(f"entry {entry.index} applied after {self._applied}")
        if entry.kind == EntryKind.NORMAL:
            self.entries.append((entry.index, entry.data))
        self._applied = entry.index

    def snapshot(self, out: BinaryIO) -> int:
        crc = 0
        for chunk in self._image_chunks():
            crc = body_crc(chunk, crc)
            out.write(chunk)
        out.write(_U32.pack(crc))
        return self._applied

    def _image_chunks(self) -> list[bytes]:
        chunks = [_LIST_HEAD.pack(_LIST_MAGIC, self._applied, len(self.entries))]
        for index, data in self.entries:
            chunks.append(_LIST_ITEM.pack(index, len(data)) + data)
        return chunks

    def restore(self, src: BinaryIO, index: int) -> None:
        crc = 0

        def take(n: int) -> bytes:
            nonlocal crc
            parts, have = [], 0
            while have < n:  # (a pipe or socket may return less than asked)
                part = src.read(min(n - have, 1 << 20))
                if not part:
                    raise SnapshotError("the image is truncated")
                parts.append(part)
                have += len(part)
            raw = b"".join(parts)
            crc = body_crc(raw, crc)
            return raw

        magic, at, count = _LIST_HEAD.unpack(take(_LIST_HEAD.size))
        if magic != _LIST_MAGIC:
            raise SnapshotError("not a ListStateMachine image")
        if at != index:
            raise SnapshotError(f"the image covers index {at}, not {index}")
        entries: list[tuple[int, bytes]] = []
        for _ in range(count):
            item_index, length = _LIST_ITEM.unpack(take(_LIST_ITEM.size))
            entries.append((item_index, take(length)))
        expected = crc
        if _U32.unpack(take(_U32.size))[0] != expected or src.read(1):
            raise SnapshotError("the image is corrupt (CRC mismatch or trailing bytes)")
        self.entries, self._applied = entries, index  # the switch: nothing changed before it
