"""Process tuning for the processes dledger starts itself (`dledger node`, `dledger broker`,
`SyncDLedgerServer`'s thread); each setting is opt-in for a process that embeds dledger.

- The event loop (`run`, `loop_factory`, `new_event_loop`): uvloop when it is installed, else asyncio's
  default. gRPC's asyncio stack costs a loop wake-up for every completed operation (each stream read and
  write), and uvloop's wake-ups are cheaper. `DLEDGER_EVENT_LOOP=asyncio` forces the default loop; `=uvloop`
  insists on uvloop and fails when it is missing. Code that embeds `DLedgerServer` in its own loop keeps it.
- The garbage collector (`tune_gc`): a node allocates several GC-tracked objects per entry and keeps tens of
  thousands alive for a while, so with CPython's default thresholds (700, 10, 10) the young generation is
  collected hundreds of times a second under load. `tune_gc` freezes every object that exists at the call
  (everything loaded and recovered at start) into the permanent generation, which collections skip, and
  raises the young generation's threshold to `YOUNG_THRESHOLD`; the older generations keep CPython's ratios.
  Reference counting still frees every acyclic object at once; cyclic garbage waits longer (a young cycle up
  to about 20,000 net allocations of tracked objects). Call it once the process has started, before load.
- glibc malloc (`tune_malloc`): a node allocates and frees buffers of about 1 MiB all the time (peer batches,
  client stream messages, 64 KiB entries); glibc serves blocks that large with fresh `mmap`s or trims the
  heap top after freeing them, so every such buffer is page-faulted in again. Fixed thresholds keep such
  blocks in the heap and a freed top of up to `trim_threshold` mapped, which bounds the extra resident memory
  by about that much. It only changes allocator thresholds (never correctness); on anything but glibc it does
  nothing and says so (returns False).

docs/benchmarks.md has what each setting is worth.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = [
    "ENV_VAR",
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "YOUNG_THRESHOLD",
    "EventLoopChoiceError",
    "loop_factory",
    "loop_name",
    "new_event_loop",
    "run",
    "tune_gc",
    "tune_malloc",
]

log = logging.getLogger(__name__)

ENV_VAR = "DLEDGER_EVENT_LOOP"
T = TypeVar("T")


class EventLoopChoiceError(ValueError):
    """`DLEDGER_EVENT_LOOP` names no loop, or a loop that is not installed."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory for new loops, by `DLEDGER_EVENT_LOOP` (uvloop when available unless told otherwise)."""
    choice = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if choice not in ("auto", "uvloop", "asyncio"):
        raise EventLoopChoiceError(f"{ENV_VAR} must be 'uvloop', 'asyncio' or unset, not {choice!r}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise EventLoopChoiceError(f"{ENV_VAR}=uvloop but uvloop is not installed (pip install uvloop)") from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """'uvloop' or 'asyncio', for logs and status."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """`asyncio.run` on `factory`'s loop (default: `loop_factory()`)."""
    with asyncio.Runner(loop_factory=factory or loop_factory()) as runner:
        return runner.run(main)


YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (10, 10)  # young collections per generation-1 collection, those per full collection


def tune_gc(*, freeze: bool = True) -> tuple[int, int, int]:
    """Raise the collection thresholds and (by default) freeze what exists now; returns the thresholds set."""
    thresholds = (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    gc.set_threshold(*thresholds)
    if freeze:
        gc.collect()  # what is garbage already should not be frozen
        gc.freeze()
    return thresholds


M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20  # blocks below this come from the heap (glibc's dynamic cap is 32 MiB)
TRIM_THRESHOLD = 64 << 20  # free heap top kept mapped before it is returned to the system


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process; True when both were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        log.debug("mallopt is not available; malloc left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
