"""glibc malloc settings for a node process (`tune_malloc`), called by `dledger node` and `dledger broker`.

Why: a node allocates and frees buffers of about 1 MiB all the time (peer batches, client stream messages,
64 KiB entries). glibc serves blocks that large with fresh `mmap`s or trims the heap top after freeing them,
so every such buffer is page-faulted in again (256 faults per MiB). Measured on the 2-core bench machine:
building and serializing a 1 MiB protobuf message 1,160 -> 195 us; 64 x 16 KiB entries into one AppendEntries
1,193 -> 367 us. Fixed thresholds keep such blocks in the heap and a freed top of up to `trim_threshold`
mapped, which bounds the extra resident memory by about that much.

Invariants: it only changes allocator thresholds (never correctness); on anything but glibc (musl, macOS) it
does nothing and says so; it is opt-in for processes that embed dledger (call it early in `main`).
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

log = logging.getLogger(__name__)

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
