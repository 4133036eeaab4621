"""The durable storage of a replica: the log (segment and index files, recovery), the LMDB hard state, and
the snapshot files.

Public API: `SegmentedLog` (a `LogStorage`), `HardStateStore` (the LMDB implementation of the
`storage_api.HardStateStore` protocol), `SnapshotStore` (with its writer, reader, receiver and chunk reader),
the shared `Entry`, `EntryKind`, `HardState`, `SnapshotMeta`, and the errors.

Modules, one job each: `codec` (the byte layout and CRCs), `segment` (one data + index file pair),
`recovery` (opening: tail validation and repair), `log` (`SegmentedLog`), `meta` (the base record kept
across compaction and reset), `checkpoint` (the flush hint), `flusher` (background fsync), `locks`, `fileops`
(the I/O seam), `verify` (read-only `log verify` / `log dump`), `hardstate` (LMDB), `snapfile` (the snapshot
file format), `snapshots` (`SnapshotStore`), `snaptransfer` (InstallSnapshot chunks), `errors`.

Invariants across modules:
- every byte read back is checked (entry and chain CRCs, meta and hard state records, snapshot header and
  file CRCs) and a failed check raises; nothing is guessed around;
- what a call reports durable is durable against a power cut: data fdatasynced, then names made durable by a
  directory fsync; files replaced whole are written to a temporary name and renamed (meta file, snapshots);
- `SegmentedLog.reset(i, t)` commits by one atomic meta file write: after a crash the log is the old one or
  the reset one; the hard state (term, vote, commit index, membership config) is one LMDB record, so it too
  changes all at once;
- a snapshot is visible only whole and durable. The order that keeps an install crash-safe for its caller:
  commit the snapshot in the `SnapshotStore`, then `reset` the log to its `(index, term)`, then save the hard
  state (a crash in between leaves a snapshot newer than the log, which the next start can install again).
"""

from dledger.commitlog.errors import (
    CorruptEntryError,
    CorruptStoreError,
    DiskFullError,
    EntryTooLargeError,
    HardStateCorruptError,
    LogClosedError,
    RecoveryRefusedError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotNotFoundError,
    SnapshotOffsetError,
    SnapshotTransferError,
    StoreInUseError,
)
from dledger.commitlog.fileops import FileOps
from dledger.commitlog.hardstate import HardStateStore
from dledger.commitlog.log import SegmentedLog, SegmentInfo
from dledger.commitlog.recovery import RecoveryReport
from dledger.commitlog.snapshots import SnapshotReader, SnapshotStore, SnapshotWriter
from dledger.commitlog.snaptransfer import SnapshotChunks, SnapshotReceiver
from dledger.commitlog.verify import Problem, VerifyReport, dump_entries, verify_store
from dledger.storage_api import CompactedError, Entry, EntryKind, HardState, SnapshotMeta, UnavailableError

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
    "HardStateCorruptError",
    "HardStateStore",
    "LogClosedError",
    "Problem",
    "RecoveryRefusedError",
    "RecoveryReport",
    "SegmentInfo",
    "SegmentedLog",
    "SnapshotChunks",
    "SnapshotCorruptError",
    "SnapshotError",
    "SnapshotMeta",
    "SnapshotNotFoundError",
    "SnapshotOffsetError",
    "SnapshotReader",
    "SnapshotReceiver",
    "SnapshotStore",
    "SnapshotTransferError",
    "SnapshotWriter",
    "StoreInUseError",
    "UnavailableError",
    "VerifyReport",
    "dump_entries",
    "verify_store",
]
