"""Raft core CPU cost: a one-process, 3-node simulated cluster over in-memory storage.

The leader proposes batches of 64 entries of 1 KiB; every node runs the driver loop of
`dledger.raft.ready` (Ready -> send -> persist to MemoryLog -> send after persist -> apply -> advance) and
messages go straight into the addressee's inbox. What is measured is everything but real I/O: the three
cores, the in-memory storage and the message passing, so it bounds the core's share of a real node's CPU.
Throughput is computed from the process's CPU time (the machine is shared; wall time is printed too).

    python -m bench.raft_sim            # ~1.3M entries
    python -m bench.raft_sim --quick    # a few seconds
    python -m bench.raft_sim --profile  # cProfile, top functions by own time
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from collections import deque

from dledger.raft import Config, Message, NotLeaderError, ProposalDroppedError, RaftCore, Role, persist_ready
from dledger.testing import MemoryHardStateStore, MemoryLog

BATCH = 64
ENTRY_BYTES = 1024
COMPACT_EVERY = 16_384  # entries


class SimNode:
    __slots__ = ("applied", "core", "inbox", "log", "store")

    def __init__(self, node_id: str, peers: tuple[str, ...], window_bytes: int) -> None:
        self.log = MemoryLog()
        self.store = MemoryHardStateStore()
        cfg = Config(id=node_id, peers=peers, max_uncommitted_bytes=window_bytes, max_inflight_msgs=64)
        self.core = RaftCore(cfg, self.log, self.store.load(), random.Random(node_id))
        self.inbox: deque[Message] = deque()
        self.applied = 0


def run(total_entries: int, window_batches: int, batch: int = BATCH) -> dict[str, float]:
    peers = ("n0", "n1", "n2")
    window_bytes = window_batches * batch * ENTRY_BYTES
    nodes = {p: SimNode(p, peers, window_bytes) for p in peers}
    messages = 0

    def pump() -> bool:
        nonlocal messages
        busy = False
        for node in nodes.values():
            core = node.core
            inbox = node.inbox
            while inbox:
                core.step(inbox.popleft())
                busy = True
            if core.has_ready():
                busy = True
                rd = core.ready()
                for m in rd.messages:
                    nodes[m.to_id].inbox.append(m)
                persist_ready(rd, node.log, node.store)
                for m in rd.persisted_messages:
                    nodes[m.to_id].inbox.append(m)
                messages += len(rd.messages) + len(rd.persisted_messages)
                if rd.committed_entries:
                    node.applied = rd.committed_entries[-1].index
                    if node.applied - node.log.first_index > COMPACT_EVERY:
                        node.log.compact_before(node.applied)  # like a real log's retention: memory stays flat
                core.advance(rd)
        return busy

    # elect n0
    lead = nodes["n0"]
    while lead.core.role is not Role.LEADER:
        lead.core.tick()
        while pump():
            pass
    while pump():
        pass
    base = lead.core.last_index
    payload = [bytes([k % 251]) * ENTRY_BYTES for k in range(batch)]
    proposed = 0
    messages = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    while True:
        core = lead.core
        while proposed < total_entries and core.uncommitted_bytes + batch * ENTRY_BYTES <= window_bytes:
            try:
                core.propose_batch(payload)
            except ProposalDroppedError:
                break  # back-pressure: the window is full
            except NotLeaderError as exc:  # pragma: no cover - no faults here
                raise SystemExit(f"lost leadership: {exc}") from exc
            proposed += batch
        pump()
        if proposed >= total_entries and all(n.applied >= base + total_entries for n in nodes.values()):
            break
    wall = time.perf_counter() - start
    elapsed = time.process_time() - cpu_start  # CPU time: the machine is shared, wall time is noisy
    return {
        "wall_seconds": wall,
        "entries": float(total_entries),
        "seconds": elapsed,
        "entries_per_s": total_entries / elapsed,
        "us_per_entry": elapsed / total_entries * 1e6,
        "messages": float(messages),
        "us_per_message": elapsed / messages * 1e6 if messages else 0.0,
        "entries_per_message": total_entries * 2 / messages if messages else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    ap.add_argument("--entries", type=int, default=0, help="entries to push (default 1,280,000; quick: 128,000)")
    ap.add_argument("--window", type=int, default=8, help="uncommitted batches the leader may have in flight")
    ap.add_argument("--batch", type=int, default=BATCH, help="entries per proposal (1 shows per-message costs)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    args = ap.parse_args(argv)
    total = args.entries or (128_000 if args.quick else 1_280_000)
    total -= total % args.batch
    if args.profile:
        prof = cProfile.Profile()
        res = prof.runcall(run, total, args.window, args.batch)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        run(min(total, 64_000), args.window, args.batch)  # warm-up
        res = run(total, args.window, args.batch)
    print(f"raft core simulation: 3 nodes, batches of {args.batch} x {ENTRY_BYTES} B, window {args.window} batches")
    print(
        f"  entries committed and applied on all nodes: {int(res['entries']):,} "
        f"in {res['seconds']:.2f} s CPU ({res['wall_seconds']:.2f} s wall)"
    )
    print(f"  throughput:       {res['entries_per_s']:,.0f} entries per CPU second  (goal >= 400,000)")
    print(f"  cost per entry:   {res['us_per_entry']:.2f} us (whole cluster: 3 cores + memory storage)")
    per_msg = res["entries_per_message"]
    print(f"  messages:         {int(res['messages']):,}  ({per_msg:.1f} entries replicated per message)")
    print(f"  cost per message: {res['us_per_message']:.1f} us")


if __name__ == "__main__":
    main()
