"""The client workload, run as separate OS processes: `python -m jepsen_like.workload --client c0 ...`.

Each client process runs `threads` workers; each worker is one Jepsen "process" at a time and records every
operation in the history (`history.py`) through `DLedgerClient`:
- append: a unique value `<client>.<worker>-<seq>`; `ok` with its index and term; `fail` only on
  `NotWrittenError` (definitely not written); `info` on `OutcomeUnknownError` or anything unexpected, after
  which the worker continues under a new process name (`<client>.<worker>.<generation>`);
- read (linearizable): `read_index()` on the leader (for half of the reads, first on one random node, as a
  Jepsen client bound to that node would ask: so a deposed leader that still believes it leads is asked
  too), then `get(i)` of the entries the worker has not seen yet (up to `MAX_NEW_PER_READ`) and a few random
  earlier ones again, all from one random node (falling back to the leader when that node has not committed
  them yet). `ok` carries `read_index` and the entries seen (index -> [term, kind, data]); a failed
  `read_index` is `fail` (a read changes nothing). An index the leader answers COMPACTED for (below its
  first index: committed, and dropped after a snapshot) is listed in `compacted`, not `missing`: the worker
  then reads on from the first index the answer names, and rereads only above the highest one it was told.
With membership changes (`--members`, `--refresh-members`): `--peers` lists every process slot, and a
`MemberFollower` thread per process reads the configuration (`members()`) every few seconds; each worker's
client follows it (writes and leader reads go to the current members), while pinned reads and gets still
choose among every slot, as a client bound to a node would (a removed node must not serve a stale read; a
slot that is not a member is asked with a short timeout).
Invariants: the sequence of operations and values of a worker depends only on the seed (timing does not);
a worker has one operation in flight; the history line of a completion is written before the next invoke.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from dledger.client.client import DLedgerClient
from dledger.client.client_policy import EntryNotFoundError, NotWrittenError, OutcomeUnknownError
from dledger.node.config import parse_peers
from jepsen_like.history import HistoryWriter

__all__ = ["MemberFollower", "Worker", "compacted_first", "main"]

MAX_NEW_PER_READ = 24
REREADS_PER_READ = 3
PINNED_READS = 0.5  # share of reads whose read_index goes first to one random node, not to the known leader
PINNED_TIMEOUT = 4.0  # long enough to outlast a pause: the node answers when it wakes up, as it would in life
NON_MEMBER_TIMEOUT = 1.0  # a pinned read of a slot that is not a member (removed, or a spare not running)


class MemberFollower:
    """The configuration as last read from the group: `members` (id -> address, from `peers` when known),
    `version` bumped on every change. `refresh` <= 0: fixed at the initial members."""

    def __init__(self, peers: dict[str, str], members: dict[str, str], group: str, refresh: float,
                 stop: threading.Event) -> None:  # fmt: skip
        self.peers, self.group, self.refresh, self.stop = peers, group, refresh, stop
        self.members = dict(members)
        self.version = 0
        self.lock = threading.Lock()

    def snapshot(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            return self.version, dict(self.members)

    def run(self) -> None:
        if self.refresh <= 0:
            return
        with DLedgerClient(self.peers, group=self.group, timeout=2.0, rpc_timeout=0.5) as client:
            while not self.stop.wait(self.refresh):
                try:
                    found = client.members(timeout=2.0)
                except Exception:
                    continue
                members = {m.id: self.peers.get(m.id, m.address) for m in found}
                with self.lock:
                    if members and members != self.members:
                        self.members, self.version = members, self.version + 1


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class Worker:
    def __init__(self, client_id: str, worker: int, peers: dict[str, str], group: str, seed: int,
                 history: HistoryWriter, read_fraction: float, think_ms: float, stop: threading.Event,
                 timeout: float = 3.0, rpc_timeout: float = 1.0,
                 follower: MemberFollower | None = None) -> None:  # fmt: skip
        self.name = f"{client_id}.{worker}"
        self.rng = random.Random(f"{seed}/{client_id}/{worker}")
        self.peers, self.group = peers, group
        self.history = history
        self.read_fraction = read_fraction
        self.think_ms = think_ms
        self.stop = stop
        self.generation = 0
        self.seq = 0
        self.last_seen = 0
        self.floor = 0  # every index up to here was compacted on a node that answered this worker
        self.timeout, self.rpc_timeout = timeout, rpc_timeout
        self.follower = follower or MemberFollower(peers, peers, group, 0, stop)
        self.members_version, self.members = self.follower.snapshot()
        self.client = DLedgerClient(self.members, group=group, timeout=timeout, rpc_timeout=rpc_timeout)
        self.node_clients = {n: DLedgerClient({n: a}, group=group, timeout=0.5, rpc_timeout=0.5)
                             for n, a in peers.items()}  # fmt: skip

    @property
    def process(self) -> str:
        return f"{self.name}.{self.generation}"

    def run(self, deadline: float) -> None:
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._follow_members()
                if self.rng.random() < self.read_fraction:
                    self.read()
                else:
                    self.append()
                if self.think_ms:
                    self.stop.wait(self.rng.uniform(0, self.think_ms) / 1000)
        finally:
            self.client.close()
            for c in self.node_clients.values():
                c.close()

    def _follow_members(self) -> None:
        version, members = self.follower.snapshot()
        if version != self.members_version:
            self.client.close()
            self.members_version, self.members = version, members
            self.client = DLedgerClient(members, group=self.group, timeout=self.timeout, rpc_timeout=self.rpc_timeout)

    def append(self) -> None:
        self.seq += 1
        value = f"{self.name}-{self.seq}"
        process = self.process
        self.history.write(process, "invoke", "append", value)
        try:
            result = self.client.append(value.encode())
        except NotWrittenError as exc:
            self.history.write(process, "fail", "append", value, error=_err(exc))
        except OutcomeUnknownError as exc:
            self.history.write(process, "info", "append", value, error=_err(exc))
            self.generation += 1
        except Exception as exc:  # anything else: the outcome is unknown
            self.history.write(process, "info", "append", value, error=_err(exc))
            self.generation += 1
        else:
            self.history.write(process, "ok", "append", value, index=result.index, term=result.term)

    def read(self) -> None:
        process = self.process
        self.history.write(process, "invoke", "read", None)
        via = self.rng.choice(list(self.peers)) if self.rng.random() < PINNED_READS else ""
        try:
            if via:  # ask one node, as a Jepsen client bound to it would (it redirects if it knows it is not leader)
                wait = PINNED_TIMEOUT if via in self.members else NON_MEMBER_TIMEOUT
                with DLedgerClient({via: self.peers[via]}, group=self.group, timeout=wait,
                                   rpc_timeout=wait) as pinned:  # fmt: skip
                    read_index = pinned.read_index()
                    leader = pinned.leader or via
            else:
                read_index = self.client.read_index()
                leader = self.client.leader or ""
        except Exception as exc:  # a read changes nothing: any failure is a plain fail
            self.history.write(process, "fail", "read", None, error=_err(exc), via=via)
            return
        wanted = list(range(self.last_seen + 1, min(read_index, self.last_seen + MAX_NEW_PER_READ) + 1))
        if self.last_seen > self.floor:
            wanted += [self.rng.randint(self.floor + 1, self.last_seen) for _ in range(REREADS_PER_READ)]
        entries: dict[str, list[Any]] = {}
        missing: list[int] = []
        compacted: list[int] = []
        node: str | None = self.rng.choice(list(self.node_clients))  # one node serves this read's gets
        for index in wanted:
            if index <= self.floor:
                continue
            entry, node = self._get(index, node)
            if isinstance(entry, int):  # compacted: every index below `entry` is
                compacted.append(index)
                self.floor = max(self.floor, entry - 1, index)
                continue
            if entry is None:
                missing.append(index)
                continue
            entries[str(index)] = [entry.term, int(entry.kind), entry.data.decode("utf-8", "backslashreplace")]
        contiguous = max(self.last_seen, min(self.floor, read_index))
        while str(contiguous + 1) in entries:
            contiguous += 1
        self.last_seen = contiguous
        extra: dict[str, Any] = {"read_index": read_index, "node": leader, "via": via, "entries": entries}
        if missing:
            extra["missing"] = missing
        if compacted:
            extra["compacted"] = compacted
        self.history.write(process, "ok", "read", None, **extra)

    def _get(self, index: int, node: str | None) -> tuple[Any, str | None]:
        """Entry `index` from `node` (committed entries are the same everywhere), else from the leader; a node
        that does not answer is not asked again in this read (returned as None). When the leader answers that
        the index is compacted, the first index it names (an int) instead of an entry."""
        if node is not None:
            try:
                return self.node_clients[node].get(index), node
            except EntryNotFoundError:
                pass  # not committed there yet, or compacted there: ask the leader
            except Exception:
                node = None
        try:
            return self.client.get(index, timeout=1.0), node
        except EntryNotFoundError as exc:
            first = compacted_first(str(exc))
            return (first if first is not None else None), node
        except Exception:
            return None, node


_COMPACTED = re.compile(r"index (\d+) is compacted \(first index (\d+)\)")


def compacted_first(message: str) -> int | None:
    """The first index named by a COMPACTED answer (`index 5 is compacted (first index 812)`), else None."""
    m = _COMPACTED.search(message)
    return int(m.group(2)) if m else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepsen_like.workload")
    p.add_argument("--peers", required=True)
    p.add_argument("--group", default="jl")
    p.add_argument("--client", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--read-fraction", type=float, default=0.25)
    p.add_argument("--think-ms", type=float, default=10.0)
    p.add_argument("--stop-file", default="")
    p.add_argument("--members", default="", help="comma-separated ids of the initial members (default: every peer)")
    p.add_argument("--refresh-members", type=float, default=0.0, help="seconds between configuration readings")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    history = HistoryWriter(args.out)
    peers = parse_peers(args.peers)
    initial = {i: peers[i] for i in args.members.split(",") if i} or peers
    follower = MemberFollower(peers, initial, args.group, args.refresh_members, stop)
    deadline = time.monotonic() + args.duration
    workers = [Worker(args.client, k, peers, args.group, args.seed, history, args.read_fraction, args.think_ms, stop,
                      follower=follower) for k in range(args.threads)]  # fmt: skip
    threads = [threading.Thread(target=w.run, args=(deadline,), name=w.name) for w in workers]
    threading.Thread(target=follower.run, name="members", daemon=True).start()
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            if args.stop_file and _exists(args.stop_file):
                stop.set()
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
        history.close()
    return 0


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


if __name__ == "__main__":
    raise SystemExit(main())
