"""The CRC-32 of entry bodies, as fast as this machine allows.

Invariant: `body_crc(data, seed)` equals `zlib.crc32(data, seed)` for every input (CRC-32/ISO-HDLC, the CRC
of zlib and java.util.zip.CRC32), so logs written with or without the fast implementation read the same.

The fast path is python-isal (ISA-L's folding CRC with PCLMULQDQ, an order of magnitude faster than zlib's
on large inputs); it costs more per call than zlib for short inputs, so `FAST_FROM` is where a caller should
switch. When isal is not installed (a platform without its wheel), `body_crc` is
zlib's and nothing else changes. `DLEDGER_CRC=zlib` forces zlib (to compare, or to rule isal out).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

__all__ = ["FAST_FROM", "IMPLEMENTATION", "body_crc"]

Crc = Callable[..., int]

FAST_FROM = 512  # bytes: from about here isal's crc32 is cheaper than zlib's (shorter inputs: zlib.crc32)


def _pick() -> tuple[Crc, str]:
    if os.environ.get("DLEDGER_CRC", "").strip().lower() == "zlib":
        return zlib.crc32, "zlib"
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.crc32, "zlib"
    fast: Crc = isal_zlib.crc32
    probe = bytes(range(256)) * 3
    if fast(probe) != zlib.crc32(probe) or fast(probe, 0x1234ABCD) != zlib.crc32(probe, 0x1234ABCD):
        return zlib.crc32, "zlib"  # never trust a CRC that disagrees with zlib's
    return fast, "isal"


body_crc, IMPLEMENTATION = _pick()
