"""`HardStateStore`: the Raft hard state (current term, vote, commit index, membership) in LMDB, durably.

The environment is opened with LMDB's default durability (`sync=True`, `metasync=True`; never
MDB_NOSYNC), so `save` returns only once the state is on disk. The state is one versioned record under the
key `b"raft/hard_state"`, so term, vote, commit index and membership change together or not at all:

    version 3 (u8), current_term (u64 LE), commit_index (u64 LE), voted_for length (u16 LE),
    config length (u32 LE), voted_for UTF-8, config bytes, CRC32 (u32 LE) of every byte before it

(voted_for length 0xFFFF means "no vote"). `config` is `HardState.config`, opaque here, at most
`MAX_CONFIG_BYTES` (1 MiB). Older records still load: version 2 is version 3 without the CRC, version 1
(written before membership was stored) is version 2 without the config length and bytes (it loads with
`config=b""`); the next `save` rewrites either as version 3. Other keys can live beside the record in the
same environment; `max_dbs` leaves room for named sub-databases too.

Why a CRC: LMDB checks none of a value's bytes, so a flipped term or vote would load as a different,
plausible state (a node back at an older term, voting twice in one term). A version 3 record that fails
its CRC raises `HardStateCorruptError`, never a guess.

Invariants: `load` of a never-saved store is `HardState()` (`exists` tells a missing record apart: the node
refuses a missing record beside a non-empty log); a bad value is refused by `save` with `ValueError` before
anything is written; a stored record that does not decode or fails its CRC raises `HardStateCorruptError`
(a `CorruptStoreError`).
"""

from __future__ import annotations

import os
import struct
import zlib
from types import TracebackType
from typing import Any

import lmdb

from dledger.commitlog.codec import MAX_CONFIG_BYTES
from dledger.commitlog.errors import HardStateCorruptError
from dledger.commitlog.fileops import DIR_MODE, FILE_MODE
from dledger.storage_api import HardState

__all__ = ["HARD_STATE_KEY", "MAX_CONFIG_BYTES", "HardStateStore", "read_hard_state"]

HARD_STATE_KEY = b"raft/hard_state"
RECOVERING_KEY = b"raft/recovering_until"
_MARK = struct.Struct("<QI")
_VERSION = 3
_CRC = struct.Struct("<I")
_FIXED = struct.Struct("<BQQHI")
_FIXED_V1 = struct.Struct("<BQQH")
_NO_VOTE = 0xFFFF
_MAX_U64 = (1 << 64) - 1
_MAX_VOTE_BYTES = 1024


def _encode(state: HardState) -> bytes:
    body = _encode_body(state)
    return body + _CRC.pack(zlib.crc32(body))


def _encode_body(state: HardState) -> bytes:
    for name in ("current_term", "commit_index"):
        value = getattr(state, name)
        if type(value) is not int or not 0 <= value <= _MAX_U64:
            raise ValueError(f"hard state {name} must be an int in [0, 2**64), not {value!r}")
    config = state.config
    if type(config) is not bytes:
        raise ValueError(f"hard state config must be bytes, not {type(config).__name__}")
    if len(config) > MAX_CONFIG_BYTES:
        raise ValueError(f"hard state config is {len(config)} bytes; the limit is {MAX_CONFIG_BYTES}")
    vote = state.voted_for
    if vote is None:
        return _FIXED.pack(_VERSION, state.current_term, state.commit_index, _NO_VOTE, len(config)) + config
    if not isinstance(vote, str) or not vote:
        raise ValueError(f"hard state voted_for must be None or a non-empty str, not {vote!r}")
    raw = vote.encode("utf-8")
    if len(raw) > _MAX_VOTE_BYTES:
        raise ValueError(f"hard state voted_for is {len(raw)} bytes; the limit is {_MAX_VOTE_BYTES}")
    return _FIXED.pack(_VERSION, state.current_term, state.commit_index, len(raw), len(config)) + raw + config


def _decode(raw: bytes, where: str) -> HardState:
    if not raw:
        raise HardStateCorruptError(f"{where}: hard state record is empty")
    version = raw[0]
    if version == 1:
        fixed = _FIXED_V1
    elif version == 2:
        fixed = _FIXED
    elif version == _VERSION:
        fixed = _FIXED
        if len(raw) < fixed.size + _CRC.size:
            raise HardStateCorruptError(f"{where}: hard state record is {len(raw)} bytes, too short")
        body = raw[: -_CRC.size]
        (stored,) = _CRC.unpack_from(raw, len(body))
        if zlib.crc32(body) != stored:
            raise HardStateCorruptError(f"{where}: hard state record fails its CRC")
        raw = body
    else:
        raise HardStateCorruptError(f"{where}: unsupported hard state version {version}")
    if len(raw) < fixed.size:
        raise HardStateCorruptError(f"{where}: hard state record is {len(raw)} bytes, too short")
    _v, term, commit, n, *rest_len = fixed.unpack_from(raw)
    config_len = rest_len[0] if rest_len else 0
    if config_len > MAX_CONFIG_BYTES:
        raise HardStateCorruptError(f"{where}: hard state config is {config_len} bytes, over the limit")
    vote_len = 0 if n == _NO_VOTE else n
    if n == 0:
        raise HardStateCorruptError(f"{where}: hard state vote is empty")
    if len(raw) != fixed.size + vote_len + config_len:
        raise HardStateCorruptError(
            f"{where}: hard state record is {len(raw)} bytes; its fields say {fixed.size + vote_len + config_len}"
        )
    config = raw[fixed.size + vote_len :]
    if n == _NO_VOTE:
        return HardState(term, None, commit, config)
    try:
        vote = raw[fixed.size : fixed.size + vote_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HardStateCorruptError(f"{where}: hard state vote is not UTF-8") from exc
    return HardState(term, vote, commit, config)


def read_hard_state(directory: str | os.PathLike[str]) -> HardState | None:
    """The record in the store at `directory`, read-only (for inspection: a running node may hold it open);
    None when no record is stored. Raises `HardStateCorruptError` like `load`, `lmdb.Error` when the
    environment cannot be opened."""
    path = os.fspath(directory)
    env = lmdb.open(path, subdir=True, readonly=True, lock=False, max_dbs=8)
    try:
        with env.begin(write=False) as txn:
            raw = txn.get(HARD_STATE_KEY)
            return None if raw is None else _decode(bytes(raw), path)
    finally:
        env.close()


class HardStateStore:
    """Durable `HardState` in an LMDB environment at `directory`."""

    def __init__(self, env: Any, directory: str) -> None:
        self._env = env
        self._dir = directory

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, map_size: int = 64 << 20) -> HardStateStore:
        """Open (creating if needed) the store in `directory` (`map_size` must leave room for a few records of
        `MAX_CONFIG_BYTES`: LMDB keeps old pages until readers are done)."""
        path = os.fspath(directory)
        os.makedirs(path, DIR_MODE, exist_ok=True)
        env = lmdb.open(
            path, map_size=map_size, subdir=True, sync=True, metasync=True, max_dbs=8, lock=True, mode=FILE_MODE
        )
        return cls(env, path)

    @property
    def directory(self) -> str:
        return self._dir

    def exists(self) -> bool:
        """Whether a hard state record is stored (`load` of a missing one is the zero state)."""
        with self._env.begin(write=False) as txn:
            return txn.get(HARD_STATE_KEY) is not None

    def load(self) -> HardState:
        with self._env.begin(write=False) as txn:
            raw = txn.get(HARD_STATE_KEY)
        if raw is None:
            return HardState()
        return _decode(bytes(raw), self._dir)

    def load_recovering_until(self) -> int:
        """The saved `recovering_until` mark (0: none; see `save_recovering_until`)."""
        with self._env.begin(write=False) as txn:
            raw = txn.get(RECOVERING_KEY)
        if raw is None:
            return 0
        raw = bytes(raw)
        if len(raw) != _MARK.size or zlib.crc32(raw[:8]) != _MARK.unpack(raw)[1]:
            raise HardStateCorruptError(f"{self._dir}: the recovering mark fails its CRC")
        return int(_MARK.unpack(raw)[0])

    def save_recovering_until(self, index: int) -> None:
        """Durably keep (or, with 0, clear) the index up to which the node's log lost entries it had
        persisted: the node votes again only once its log reaches it, across restarts (u64 LE + CRC32)."""
        if type(index) is not int or not 0 <= index <= _MAX_U64:
            raise ValueError(f"recovering_until must be an int in [0, 2**64), not {index!r}")
        with self._env.begin(write=True) as txn:
            if index == 0:
                txn.delete(RECOVERING_KEY)
            else:
                head = struct.pack("<Q", index)
                txn.put(RECOVERING_KEY, head + _CRC.pack(zlib.crc32(head)))

    def save(self, state: HardState) -> None:
        """Store `state`; returns once the LMDB commit is durable."""
        if not isinstance(state, HardState):
            raise TypeError(f"save expects a HardState, not {type(state).__name__}")
        value = _encode(state)
        with self._env.begin(write=True) as txn:
            txn.put(HARD_STATE_KEY, value)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> HardStateStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
