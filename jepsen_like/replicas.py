"""The replicas' logs after healing: `dledger log verify`, the committed prefix, and byte identity.

`final_state` runs on stopped nodes (their stores closed). For each replica it runs `dledger log verify`,
reads entries 1..common (the lowest commit index the replicas reported before they stopped) with the
read-only `dump_entries`, and hashes the raw data-file bytes from the start of the log to the end of entry
`common` (located through its index record). Replicas agree iff those digests are equal: the entries'
headers carry positions and a CRC chain over every earlier byte, so equal digests mean byte-identical logs.
A replica whose log starts later (it was compacted, or it installed a snapshot and its log was reset past
it) is compared entry by entry on the range it holds (its first index is its meta file's base + 1); the
reference is a replica whose log starts earliest. Raw bytes are hashed from the replica's base position (where
its first retained segment starts) and compared among the replicas with the same base (index, position):
compaction drops whole segments of byte-identical logs, so equal logs compacted alike stay comparable, while a
log reset by a snapshot install restarts its positions and chain afresh and is compared by entries only.
The result (JSON-safe) is what the checker takes as `final`:
`{"healed", "common_index", "first_index", "entries": [[index, term, kind, data], ...], "replicas": {...},
"replica_problems": [...], "problems": [...]}`.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from dledger.commitlog.codec import INDEX, INDEX_MAGIC, INDEX_SIZE
from dledger.commitlog.meta import read_base
from dledger.commitlog.recovery import list_segments
from dledger.commitlog.segment import DATA_DIR, INDEX_DIR, segment_name
from dledger.commitlog.verify import Problem, dump_entries

__all__ = ["final_state", "raw_digest"]


def _entry_end(directory: str, index: int) -> int | None:
    """Global byte position just past entry `index`, from its index record (None if not found)."""
    for start in reversed(list_segments(directory)):
        path = os.path.join(directory, INDEX_DIR, segment_name(start))
        try:
            with open(path, "rb") as f:
                first = INDEX.unpack(f.read(INDEX_SIZE))
                if first[0] != INDEX_MAGIC or first[3] > index:
                    continue
                f.seek((index - first[3]) * INDEX_SIZE)
                rec = INDEX.unpack(f.read(INDEX_SIZE))
        except (OSError, ValueError, Exception):
            return None
        if rec[0] != INDEX_MAGIC or rec[3] != index:
            return None
        return int(rec[1]) + int(rec[2])
    return None


def raw_digest(directory: str, index: int) -> str | None:
    """sha256 of the data bytes from the log's base position to the end of entry `index` (None if unreadable)."""
    if index <= 0:
        return hashlib.sha256().hexdigest()
    end = _entry_end(directory, index)
    if end is None:
        return None
    h = hashlib.sha256()
    base = read_base(directory).pos  # segments below it were compacted away (or are a crash's leftovers)
    for start in list_segments(directory):
        if start < base:
            continue
        if start >= end:
            break
        with open(os.path.join(directory, DATA_DIR, segment_name(start)), "rb") as f:
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
    return h.hexdigest()


def verify_cli(directory: str) -> tuple[int, str]:
    """Run `dledger log verify DIR`; (exit code, output)."""
    out = subprocess.run([sys.executable, "-m", "dledger", "log", "verify", directory], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    return out.returncode, (out.stdout + out.stderr).strip()[-2000:]


def final_state(log_dirs: Mapping[str, pathlib.Path], commit: Mapping[str, int], healed: bool,
                problems: list[str]) -> dict[str, Any]:  # fmt: skip
    """Compare the stopped replicas' committed logs; see the module docstring for the shape."""
    common = min(commit.values()) if commit else 0
    replicas: dict[str, Any] = {}
    replica_problems: list[str] = []
    read: dict[str, list[list[Any]]] = {}
    for node_id, path in log_dirs.items():
        directory = str(path)
        code, output = verify_cli(directory)
        if code != 0:
            replica_problems.append(f"{node_id}: dledger log verify exited {code}: {output[-500:]}")
        entries: list[list[Any]] = []
        bad: list[str] = []
        try:
            for item in dump_entries(directory, 1, common + 1):
                if isinstance(item, Problem):
                    bad.append(str(item))
                else:
                    entries.append([item.index, item.term, int(item.kind),
                                    item.data.decode("utf-8", "backslashreplace")])  # fmt: skip
        except Exception as exc:
            bad.append(f"{type(exc).__name__}: {exc}")
        if bad:
            replica_problems.append(f"{node_id}: reading entries 1..{common}: {bad[:3]}")
        try:
            base = read_base(directory)
        except Exception as exc:
            replica_problems.append(f"{node_id}: reading its meta file: {type(exc).__name__}: {exc}")
            base = None
        first = base.index + 1 if base is not None else (entries[0][0] if entries else 1)
        if [e[0] for e in entries] != list(range(first, common + 1)):
            replica_problems.append(f"{node_id}: holds {len(entries)} readable committed entries from index "
                                    f"{first}, expected {first}..{common}")  # fmt: skip
        digest = raw_digest(directory, common) if first <= common else "empty"
        replicas[node_id] = {"commit_index": commit.get(node_id), "verify_exit": code, "verify": output[-300:],
                             "entries": len(entries), "first_index": first, "digest": digest,
                             "base_pos": base.pos if base is not None else None}  # fmt: skip
        read[node_id] = entries
    reference_node = min(read, key=lambda n: replicas[n]["first_index"], default="")
    reference = read.get(reference_node)
    for node_id, entries in read.items():
        if node_id == reference_node or reference is None:
            continue
        first = replicas[node_id]["first_index"]
        theirs = reference[first - replicas[reference_node]["first_index"] :]
        if entries != theirs:
            diff = next((k for k, (a, b) in enumerate(zip(theirs, entries, strict=False)) if a != b), None)
            where = f"first difference at index {diff + first}" if diff is not None else "lengths differ"
            replica_problems.append(f"{node_id} and {reference_node} hold different committed entries ({where})")
    groups: dict[tuple[int, Any], set[str | None]] = {}
    for r in replicas.values():
        groups.setdefault((r["first_index"], r["base_pos"]), set()).add(r["digest"])
    for (first, pos), digests in sorted(groups.items(), key=str):
        if len(digests) > 1 or None in digests:
            shown = {n: (r["digest"] or "unreadable")[:16] for n, r in replicas.items()
                     if (r["first_index"], r["base_pos"]) == (first, pos)}  # fmt: skip
            replica_problems.append(f"raw log bytes from index {first} (position {pos}) up to index {common} differ: "
                                    f"{shown}")  # fmt: skip
    first_index = replicas[reference_node]["first_index"] if reference_node else 1
    return {"healed": healed, "common_index": common, "first_index": first_index, "entries": reference or [],
            "replicas": replicas, "replica_problems": replica_problems, "problems": problems}  # fmt: skip
