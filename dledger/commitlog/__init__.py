"""The durable log: segment files, index files, recovery; LMDB hard state.

Public API: `SegmentedLog` (a `LogStorage`), `HardStateStore` (the LMDB implementation of the
`storage_api.HardStateStore` protocol), the shared `Entry`, `EntryKind`, `HardState`, and the errors.

Modules, one job each: `codec` (the byte layout and CRCs), `segment` (one data + index file pair),
`recovery` (opening: tail validation and repair), `log` (`SegmentedLog`), `meta` (the base record kept
across compaction), `flusher` (background fsync), `locks`, `fileops` (the I/O seam), `verify` (read-only
`log verify` / `log dump`), `hardstate` (LMDB), `errors`.
"""

from dledger.commitlog.errors import (
    CorruptEntryError,
    CorruptStoreError,
    DiskFullError,
    EntryTooLargeError,
    LogClosedError,
    StoreInUseError,
)
from dledger.commitlog.fileops import FileOps
from dledger.commitlog.hardstate import HardStateStore
from dledger.commitlog.log import SegmentedLog, SegmentInfo
from dledger.commitlog.recovery import RecoveryReport
from dledger.commitlog.verify import Problem, VerifyReport, dump_entries, verify_store
from dledger.storage_api import CompactedError, Entry, EntryKind, HardState, UnavailableError

__all__ = [
    "CompactedError",
    "CorruptEntryError",
    "CorruptStoreError",
    "DiskFullError",
    "Entry",
    "EntryKind",
    "EntryTooLargeError",
    "FileOps",
    "HardState",
    "HardStateStore",
    "LogClosedError",
    "Problem",
    "RecoveryReport",
    "SegmentInfo",
    "SegmentedLog",
    "StoreInUseError",
    "UnavailableError",
    "VerifyReport",
    "dump_entries",
    "verify_store",
]
