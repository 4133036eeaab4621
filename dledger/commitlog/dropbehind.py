"""Drop-behind: which durable bytes of the log to evict from the page cache, so that it stays bounded.

Every byte appended enters the page cache and, left alone, stays there until the kernel needs the memory: a
log written for hours grows the cache by gigabytes, and then every new page of a write costs a reclaim (on
this project's VMs, whose freed memory goes back to the host, a host fault: `pwrite` fell from ~1.6 to
~0.45 GB/s after a few GB written). The log reads back only entries a lagging follower or a reader needs,
mostly recent ones, so the newest bytes are worth keeping and the rest is not.

Policy (`behind`): the window is the newest `window` durable bytes of the whole log, by global byte position
(so it spans segments). A segment wholly behind the window, and wholly durable, is evicted to its end; the
segment the window starts in, up to the window's start rounded down to whole `ALIGN` runs. Only durable
bytes (`flushed_data`): evicting dirty pages would start their writeback out of turn. Each byte is evicted
once: `Segment.dropped_data` marks how far (the caller sets it). Segments whose handles are closed are
skipped (the log evicts a segment whole when it closes its handles). Eviction is advice: it never changes
content, and a read of evicted bytes goes to the disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from dledger.commitlog.segment import Segment

__all__ = ["ALIGN", "behind"]

ALIGN = 1 << 20  # evict whole MiB runs: fewer, larger calls


def behind(segs: Sequence[Segment], window: int) -> list[tuple[Segment, int, int]]:
    """The `(segment, start, end)` byte ranges (offsets within each segment's data file) to evict now."""
    if window <= 0 or not segs:
        return []
    last = segs[-1]
    cut = last.start + last.flushed_data - window  # global position where the window starts
    out: list[tuple[Segment, int, int]] = []
    for seg in segs:
        if seg.start >= cut:
            break
        if not seg.fds_open:
            continue
        if seg is not last and seg.flushed_data == seg.data_len and seg.start + seg.data_len <= cut:
            end = seg.data_len
        else:
            end = min(seg.flushed_data, cut - seg.start) // ALIGN * ALIGN
        if end > seg.dropped_data:
            out.append((seg, seg.dropped_data, end))
    return out
