"""tune_malloc: after it, a 4 MiB buffer comes from the heap instead of its own mmap (what saves the page
faults of every large peer message; see the module). Run in a fresh interpreter: the settings are per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.process

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from dledger.node.tuning import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    tuned = sys.argv[1] == "tuned" and tune_malloc()
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 << 20)
    mmapped = libc.mallinfo2().hblks - before
    libc.free(block)
    print(tuned, mmapped)
    """
)


def _probe(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    tuned, mmapped = out.split()
    return tuned, int(mmapped)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_large_buffers_come_from_the_heap_after_tuning() -> None:
    try:
        assert _probe("plain") == ("False", 1)  # glibc's default: a 4 MiB block is an mmap of its own
    except subprocess.CalledProcessError:  # pragma: no cover
        pytest.skip("not glibc >= 2.33 (no mallinfo2)")
    assert _probe("tuned") == ("True", 0)
