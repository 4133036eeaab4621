"""The errors the commit log raises, all of them carrying enough context to act on.

Invariant: an error raised from the write path (`append`) means nothing of that call was published: the
log still reads back exactly what it held before the call.
"""

from __future__ import annotations

import errno

__all__ = [
    "CorruptEntryError",
    "CorruptStoreError",
    "DiskFullError",
    "EntryTooLargeError",
    "HardStateCorruptError",
    "LogClosedError",
    "RecoveryRefusedError",
    "SnapshotCorruptError",
    "SnapshotError",
    "SnapshotNotFoundError",
    "SnapshotOffsetError",
    "SnapshotTransferError",
    "StoreInUseError",
]


class CorruptEntryError(Exception):
    """A stored entry failed its checks (CRC, magic, index, term, position): it is never returned as data.

    `segment` is the file that holds it (data or index file), `position` the byte offset inside that file,
    `index` the log index that was looked up (or found), `reason` what check failed.
    """

    def __init__(self, segment: str, position: int, index: int | None, reason: str) -> None:
        self.segment = segment
        self.position = position
        self.index = index
        self.reason = reason
        what = f"entry {index}" if index is not None else "entry"
        super().__init__(f"corrupt {what} in {segment} at byte {position}: {reason}")


class CorruptStoreError(Exception):
    """The store cannot be opened as is (e.g. its checksummed meta file is damaged, or files are missing)."""


class HardStateCorruptError(CorruptStoreError):
    """The stored hard state (term, vote, commit index, membership) fails its CRC or does not decode."""


class RecoveryRefusedError(CorruptStoreError, OSError):
    """A node refuses to start on this store: its message is one line naming what is wrong, the file, and
    the documented recovery. An `OSError` too, so that callers reporting start-up I/O errors as one line
    report it the same way."""


class EntryTooLargeError(ValueError):
    """An entry is larger than the maximum entry size or than a segment; nothing of the batch was written."""


class DiskFullError(OSError):
    """The disk filled up during `append`; the batch was rolled back and the log is unchanged."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class LogClosedError(RuntimeError):
    """The log was closed (or a failed rollback poisoned it: reopen to recover)."""


class StoreInUseError(RuntimeError):
    """The store is already open for writing (its LOCK file is held), by this process or another one."""


class SnapshotError(Exception):
    """Base of the snapshot store's errors."""


class SnapshotCorruptError(SnapshotError):
    """A snapshot file (stored or received) fails its checks: magic, version, header CRC, sizes, file CRC, or
    its meta disagrees with its name or with what was asked for. It is never read as a state machine image."""


class SnapshotNotFoundError(SnapshotError, LookupError):
    """No snapshot with the requested index and term is stored."""


class SnapshotTransferError(SnapshotError):
    """A received chunk or transfer is refused (bad chunk CRC, past the announced size, header bytes that
    disagree with the announced meta, a receiver that was superseded or closed); nothing of it was written."""


class SnapshotOffsetError(SnapshotTransferError):
    """A chunk does not start at the next expected offset (a gap, a duplicate, a reordering), or `finish` was
    called early. `expected` is where the sender must resume."""

    def __init__(self, message: str, expected: int) -> None:
        self.expected = expected
        super().__init__(f"{message}; the next expected offset is {expected}")
