"""The flush checkpoint: how much of the last segment is known fsynced, so recovery can check the rest.

After every background flush (and at rollover, truncation and close; in sync mode after every append,
whose data is fsynced before it is published) the log records, in the small file
`checkpoint`, the last segment's start and its fsynced length and entry count:

    magic 4 (CHECKPOINT_MAGIC), segment start 8, data bytes 8, entries 8, CRC 4 (of the 28 bytes before)

The file is rewritten in place and fsynced only at truncation (`CheckpointFile.sync`): it is a hint. It is
written only after the fsync it describes, so whatever survives a crash (the new value or an older one) never
claims more than is durable; an older one never predates the last truncation (which replaced the entries it
described, so recovery would not check their un-fsynced successors);
a torn or missing file fails its CRC and is ignored. Recovery scans the last segment's data from the
checkpoint on (see `recovery.py`), so a hole that a crash left in un-fsynced data is cut, however far
before the end it is; the scan costs what was written since the last flush.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

from dledger.commitlog.fileops import FILE_MODE, FileOps

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "CheckpointFile", "read_checkpoint"]

CHECKPOINT_NAME = "checkpoint"
CHECKPOINT_MAGIC = 0xD1EDC4EC
_RECORD = struct.Struct("<IQQQ")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Segment `start` holds `count` entries in `data_len` bytes that are known fsynced."""

    start: int
    data_len: int
    count: int


def _encode(cp: Checkpoint) -> bytes:
    record = _RECORD.pack(CHECKPOINT_MAGIC, cp.start, cp.data_len, cp.count)
    return record + _CRC.pack(zlib.crc32(record))


def read_checkpoint(directory: str) -> Checkpoint | None:
    """The stored checkpoint, or None when it is missing or damaged (it is only a hint)."""
    try:
        with open(os.path.join(directory, CHECKPOINT_NAME), "rb") as f:
            raw = f.read(_RECORD.size + _CRC.size)
    except OSError:
        return None
    if (
        len(raw) != _RECORD.size + _CRC.size
        or zlib.crc32(raw[: _RECORD.size]) != _CRC.unpack_from(raw, _RECORD.size)[0]
    ):
        return None
    magic, start, data_len, count = _RECORD.unpack_from(raw)
    return Checkpoint(start, data_len, count) if magic == CHECKPOINT_MAGIC else None


class CheckpointFile:
    """The open checkpoint file; `write` replaces the record in place (one pwrite, no fsync)."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, CHECKPOINT_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)

    def write(self, cp: Checkpoint) -> None:
        os.pwrite(self._fd, _encode(cp), 0)

    def sync(self, ops: FileOps) -> None:
        """Make the record durable (after a truncation: else a power cut could leave a record from before it,
        describing entries that were replaced by newer, un-fsynced ones that recovery would then not check)."""
        ops.datasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
