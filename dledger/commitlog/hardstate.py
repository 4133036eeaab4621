"""`HardStateStore`: the Raft hard state (current term, vote, commit index) in LMDB, with durable commits.

The environment is opened with LMDB's default durability (`sync=True`, `metasync=True`; never
MDB_NOSYNC), so `save` returns only once the state is on disk. The state is one versioned record under the
key `b"raft/hard_state"`:

    version 1 (u8), current_term (u64 LE), commit_index (u64 LE), voted_for length (u16 LE), voted_for UTF-8

(length 0xFFFF means "no vote"). Other keys (e.g. a later issue's membership config under `b"raft/..."`)
can live beside it in the same environment; `max_dbs` leaves room for named sub-databases too.

Invariants: `load` of a never-saved store is `HardState()`; a bad value is refused by `save` with
`ValueError` before anything is written; a stored record that does not decode raises `CorruptStoreError`.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType
from typing import Any

import lmdb

from dledger.commitlog.errors import CorruptStoreError
from dledger.storage_api import HardState

__all__ = ["HARD_STATE_KEY", "HardStateStore"]

HARD_STATE_KEY = b"raft/hard_state"
_VERSION = 1
_FIXED = struct.Struct("<BQQH")
_NO_VOTE = 0xFFFF
_MAX_U64 = (1 << 64) - 1
_MAX_VOTE_BYTES = 1024


def _encode(state: HardState) -> bytes:
    for name in ("current_term", "commit_index"):
        value = getattr(state, name)
        if type(value) is not int or not 0 <= value <= _MAX_U64:
            raise ValueError(f"hard state {name} must be an int in [0, 2**64), not {value!r}")
    vote = state.voted_for
    if vote is None:
        return _FIXED.pack(_VERSION, state.current_term, state.commit_index, _NO_VOTE)
    if not isinstance(vote, str) or not vote:
        raise ValueError(f"hard state voted_for must be None or a non-empty str, not {vote!r}")
    raw = vote.encode("utf-8")
    if len(raw) > _MAX_VOTE_BYTES:
        raise ValueError(f"hard state voted_for is {len(raw)} bytes; the limit is {_MAX_VOTE_BYTES}")
    return _FIXED.pack(_VERSION, state.current_term, state.commit_index, len(raw)) + raw


def _decode(raw: bytes, where: str) -> HardState:
    if len(raw) < _FIXED.size:
        raise CorruptStoreError(f"{where}: hard state record is {len(raw)} bytes, too short")
    version, term, commit, n = _FIXED.unpack_from(raw)
    if version != _VERSION:
        raise CorruptStoreError(f"{where}: unsupported hard state version {version}")
    rest = raw[_FIXED.size :]
    if n == _NO_VOTE:
        if rest:
            raise CorruptStoreError(f"{where}: hard state record has {len(rest)} trailing bytes")
        return HardState(term, None, commit)
    if len(rest) != n or n == 0:
        raise CorruptStoreError(f"{where}: hard state vote is {len(rest)} bytes, the record says {n}")
    try:
        vote = rest.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptStoreError(f"{where}: hard state vote is not UTF-8") from exc
    return HardState(term, vote, commit)


class HardStateStore:
    """Durable `HardState` in an LMDB environment at `directory`."""

    def __init__(self, env: Any, directory: str) -> None:
        self._env = env
        self._dir = directory

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, map_size: int = 64 << 20) -> HardStateStore:
        """Open (creating if needed) the store in `directory`."""
        path = os.fspath(directory)
        os.makedirs(path, exist_ok=True)
        env = lmdb.open(path, map_size=map_size, subdir=True, sync=True, metasync=True, max_dbs=8, lock=True)
        return cls(env, path)

    def load(self) -> HardState:
        with self._env.begin(write=False) as txn:
            raw = txn.get(HARD_STATE_KEY)
        if raw is None:
            return HardState()
        return _decode(bytes(raw), self._dir)

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
