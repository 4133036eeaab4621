"""A node's snapshot body: the images of all its state machines, one section each, in registration order.

Layout: magic `DLSMIMG1`, a u32 section count, then per state machine a u64 length and that many bytes of
the machine's own image (`SnapshottingStateMachine.snapshot`). The snapshot file around it (`SnapshotStore`)
carries the index, term, configuration and the CRCs; this layer only splits the body.

Invariants: `write_image` asks every machine for an image at the same index (the driver calls it between
applies, when all of them applied exactly `index`) and refuses one that reports another index; `restore_image`
checks the count and every section length before it hands a section to its machine, and a machine sees
exactly its own bytes (a short or long section is an error, never a silent misalignment). A node with no
state machine has an empty image (count 0): its snapshot is only the metadata, so a follower that installs
it just continues its log after the snapshot's index.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections.abc import Sequence
from typing import BinaryIO

from dledger.node.state_machine import SnapshotError, StateMachine, require_snapshotting

__all__ = ["read_exact", "restore_image", "write_image"]

MAGIC = b"DLSMIMG1"
_COUNT = struct.Struct(">I")
_LEN = struct.Struct(">Q")
_SPOOL = 8 << 20  # a section up to this size is built in memory, larger ones in a temporary file


def write_image(out: BinaryIO, machines: Sequence[StateMachine], index: int) -> None:
    """Write the images of `machines`, all of which applied exactly up to `index`."""
    out.write(MAGIC + _COUNT.pack(len(machines)))
    for sm in machines:
        snapper = require_snapshotting(sm)
        with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
            got = snapper.snapshot(spool)  # type: ignore[arg-type]  # a binary file object
            if got != index:
                raise SnapshotError(f"{type(sm).__name__} made an image at index {got}, the node applied {index}")
            size = spool.tell()
            spool.seek(0)
            out.write(_LEN.pack(size))
            shutil.copyfileobj(spool, out)


def read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if data is None or len(data) != n:
        raise SnapshotError(f"snapshot image ends inside the {what}")
    return data


def restore_image(src: BinaryIO, machines: Sequence[StateMachine], index: int, only: Sequence[int] = ()) -> None:
    """Restore every machine (or the positions in `only`) from an image written by `write_image`."""
    if read_exact(src, len(MAGIC), "header") != MAGIC:
        raise SnapshotError("not a dledger snapshot image (bad magic)")
    (count,) = _COUNT.unpack(read_exact(src, _COUNT.size, "header"))
    if count != len(machines):
        raise SnapshotError(f"the snapshot holds {count} state machine images, this node has {len(machines)}")
    wanted = set(only) if only else set(range(count))
    for k, sm in enumerate(machines):
        (size,) = _LEN.unpack(read_exact(src, _LEN.size, f"length of section {k}"))
        with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
            left = size
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise SnapshotError(f"snapshot image ends inside section {k}")
                if k in wanted:
                    spool.write(chunk)
                left -= len(chunk)
            if k in wanted:
                spool.seek(0)
                require_snapshotting(sm).restore(spool, index)  # type: ignore[arg-type]
    if src.read(1):
        raise SnapshotError("snapshot image has bytes after its last section")
