"""The checker of the broker workload: a produce / consume history (`broker_workload`) against the queue rules.

Like Jepsen's queue checkers and OpenChaos, it compares what was sent with what the consumer group got. A
message is named by its body (unique per send); a stored message by its position (queue, offset), which the
consumer reads from its receipt handle. Delivery is at-least-once: one stored message may be delivered
several times (a receive whose acks failed, an expired invisible time, a failover), so redelivery alone is no
anomaly. Anomalies (each names the operations involved):
- `lost`: a send acknowledged `ok` whose message the group never got, although the consumers drained;
- `phantom`: a delivered body that no send wrote;
- `failed-send-delivered`: a delivered body whose send had `fail` (the broker promised nothing was written);
- `duplicated-send`: one send stored as two messages (its body delivered at two positions). The workload
  turns the client's resend off, so each send is one SendMessage request: a second copy was made by the
  broker, which must then not have answered anything that promised "once" (see docs/testing.md);
- `divergent`: one position delivered with two different bodies or message ids;
- `receipt-mismatch`: an acknowledged send's receipt (message id, queue offset) differs from what the
  consumers got for its body;
- `redelivered-after-ack`: a receive invoked after an acknowledgement of a position completed (`ok`)
  delivers that position again;
- `queue-order`: within one queue, first deliveries (delivery attempt 1) are not in increasing offset order,
  within one receive or between receives that follow each other in real time; or one position is
  delivered as a first delivery twice;
- `undelivered-offset`: after a quiet drain, a queue has an offset below its highest delivered offset that
  was never delivered (a stored message the group never got, whatever its send's outcome);
- `undrained`: no consumer saw its drain end quietly, so `lost` may only be late;
- `unhealed` / `replica-mismatch`: as for the log workload (`checker.check_final`).
Invariant: `check_broker` only reads its inputs; the verdict is valid iff no anomaly was found.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_like.checker import Report, Verdict, check_final
from jepsen_like.history import INF, Op

__all__ = ["Delivery", "check_broker", "deliveries"]

Position = tuple[int, int]  # (queue, offset)


@dataclass(frozen=True, slots=True)
class Delivery:
    body: str
    msg_id: str
    queue: int | None
    offset: int | None
    attempt: int
    op: Op

    @property
    def position(self) -> Position | None:
        return None if self.queue is None or self.offset is None else (self.queue, self.offset)


def deliveries(ops: Sequence[Op]) -> list[Delivery]:
    """Every message of every `ok` receive, in history order."""
    out = []
    for o in ops:
        if o.f == "receive" and o.type == "ok":
            for body, msg_id, queue, offset, attempt in o.result.get("messages") or []:
                out.append(Delivery(str(body), str(msg_id), queue, offset, int(attempt or 0), o))
    return out


def check_broker(ops: Sequence[Op], final: dict[str, Any] | None = None) -> Verdict:
    """Check a broker workload history (paired) and the healed replicas' state (None: not known)."""
    rep = Report()
    sends: dict[str, Op] = {}
    for o in ops:
        if o.f == "send":
            sends.setdefault(str(o.value), o)
    got = deliveries(ops)

    # 1. every delivered body was sent, by a send that did not fail; one position holds one message
    at: dict[Position, Delivery] = {}
    positions: dict[str, dict[Position, Delivery]] = defaultdict(dict)
    delivered: dict[str, Delivery] = {}
    for d in got:
        writer = sends.get(d.body)
        if d.body not in delivered:
            delivered[d.body] = d
            if writer is None:
                rep.add("phantom", f"{d.body!r} (id {d.msg_id}, {_where(d)}) was delivered; no send wrote it", (d.op,))
            elif writer.type == "fail":
                rep.add("failed-send-delivered", f"{d.body!r} was delivered ({_where(d)}), but its send failed: "
                        f"{writer.result.get('error')}", (writer, d.op))  # fmt: skip
        pos = d.position
        if pos is None:
            continue
        first = at.setdefault(pos, d)
        if (first.body, first.msg_id) != (d.body, d.msg_id):
            rep.add("divergent", f"{_where(d)} was delivered as {first.body!r} (id {first.msg_id}) and as "
                    f"{d.body!r} (id {d.msg_id})", (first.op, d.op))  # fmt: skip
        positions[d.body].setdefault(pos, d)
    for body, where in positions.items():
        if len(where) > 1:
            shown = ", ".join(_where(d) for d in where.values())
            rep.add("duplicated-send", f"{body!r} is stored as {len(where)} messages: {shown}",
                    (sends.get(body), *[d.op for d in where.values()]))  # fmt: skip

    # 2. acknowledged sends are delivered, where and as their receipt said
    drains = [o for o in ops if o.f == "drain"]
    drained = any(o.type == "ok" and o.result.get("quiet") for o in drains)
    if drains and not drained:
        rep.add("undrained", f"no consumer saw its drain end quietly ({len(drains)} drains)", drains[:3])
    lost = 0
    for body, o in sends.items():
        if o.type != "ok":
            continue
        if body not in delivered:
            lost += 1
            rep.add("lost", f"acknowledged send {body!r} (id {o.result.get('msg_id')}, offset "
                    f"{o.result.get('offset')}) was never delivered", (o,))  # fmt: skip
            continue
        d = delivered[body]
        offsets = {p[1] for p in positions.get(body, {})}
        if d.msg_id != o.result.get("msg_id") or (offsets and o.result.get("offset") not in offsets):
            rep.add("receipt-mismatch", f"send {body!r} was acknowledged as id {o.result.get('msg_id')} at offset "
                    f"{o.result.get('offset')}, but delivered as id {d.msg_id} at {_where(d)}", (o, d.op))  # fmt: skip

    # 3. an acknowledged position is not delivered again to a receive invoked after the ack completed
    acked: dict[Position, Op] = {}
    for o in ops:
        if o.f == "ack" and o.type == "ok" and o.result.get("queue") is not None:
            pos = (int(o.result["queue"]), int(o.result["offset"]))
            if pos not in acked or o.end < acked[pos].end:
                acked[pos] = o
    for d in got:
        ack = acked.get(d.position) if d.position is not None else None
        if ack is not None and ack.end < d.op.start:
            rep.add("redelivered-after-ack", f"{d.body!r} ({_where(d)}, attempt {d.attempt}) was delivered by a "
                    f"receive invoked after its ack (op {ack.id}) completed", (ack, d.op))  # fmt: skip

    # 4. first deliveries of a queue go forward
    _first_delivery_order(rep, got)

    # 5. after a quiet drain, no stored message of a queue was left behind
    if drained:
        by_queue: dict[int, set[int]] = defaultdict(set)
        for pos in at:
            by_queue[pos[0]].add(pos[1])
        for queue, seen in sorted(by_queue.items()):
            gaps = sorted(set(range(max(seen) + 1)) - seen)
            if gaps:
                rep.add("undelivered-offset", f"queue {queue}: offsets {_ranges(gaps)} were never delivered (the "
                        f"highest delivered is {max(seen)})")  # fmt: skip

    healed = check_final(rep, final) if final is not None else None
    n: dict[str, int] = defaultdict(int)
    for o in ops:
        n[f"{o.f}s_{o.type}"] += 1
        n[f"{o.f}s"] += 1
    stats = {
        "ops": len(ops),
        "sends": n["sends"], "sends_ok": n["sends_ok"], "sends_fail": n["sends_fail"], "sends_info": n["sends_info"],
        "info_sends_delivered": sum(o.type == "info" and b in delivered for b, o in sends.items()),
        "receives": n["receives"], "receives_ok": n["receives_ok"],
        "deliveries": len(got), "messages_delivered": len(delivered), "positions_delivered": len(at),
        "redeliveries": sum(1 for d in got if d.attempt > 1),
        "acks": n["acks"], "acks_ok": n["acks_ok"], "acks_fail": n["acks_fail"], "acks_info": n["acks_info"],
        "queues": len({p[0] for p in at}), "lost": lost, "drained": drained, "healed": healed,
        "final_common_index": None if final is None else final.get("common_index"),
    }  # fmt: skip
    return rep.verdict(stats)


def _first_delivery_order(rep: Report, got: list[Delivery]) -> None:
    firsts: dict[int, list[Delivery]] = defaultdict(list)  # receive op id -> its first deliveries, in order
    ops: dict[int, Op] = {}
    seen: dict[Position, Delivery] = {}
    for d in got:
        if d.attempt != 1 or d.position is None:
            continue
        if d.position in seen:
            rep.add("queue-order", f"{_where(d)} was delivered as a first delivery twice", (seen[d.position].op, d.op))
        seen.setdefault(d.position, d)
        firsts[d.op.id].append(d)
        ops[d.op.id] = d.op
    top: dict[int, dict[int, int]] = {}  # receive op id -> queue -> highest first-delivered offset
    low: dict[int, dict[int, Delivery]] = {}
    for op_id, ds in firsts.items():
        last: dict[int, int] = {}
        low[op_id] = {}
        for d in ds:
            q, off = d.position or (0, 0)
            if q in last and off <= last[q]:
                rep.add("queue-order", f"one receive delivered queue {q} offset {off} after offset {last[q]}", (d.op,))
            last[q] = max(off, last.get(q, -1))
            if q not in low[op_id] or off < (low[op_id][q].offset or 0):
                low[op_id][q] = d
        top[op_id] = last
    # real time: a receive that completed before another was invoked handed out lower offsets in every queue
    finished = sorted((o for o in ops.values() if o.end != INF), key=lambda o: o.end)
    best: dict[int, tuple[int, Op]] = {}
    k = 0
    for b in sorted(ops.values(), key=lambda o: o.start):
        while k < len(finished) and finished[k].end < b.start:
            for q, off in top[finished[k].id].items():
                if q not in best or off > best[q][0]:
                    best[q] = (off, finished[k])
            k += 1
        for q, d in low[b.id].items():
            if q in best and (d.offset or 0) <= best[q][0]:
                earlier_offset, earlier = best[q]
                why = (f"queue {q}: a receive delivered offset {d.offset} first, after an earlier receive "
                       f"(op {earlier.id}) had delivered {earlier_offset} first")  # fmt: skip
                rep.add("queue-order", why, (earlier, b))


def _where(d: Delivery) -> str:
    return f"queue {d.queue} offset {d.offset}"


def _ranges(xs: list[int]) -> str:
    out: list[str] = []
    start = prev = xs[0]
    for x in [*xs[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(out[:20]) + (" ..." if len(out) > 20 else "")
