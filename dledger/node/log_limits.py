"""Logging that a stranger on the network cannot turn into a flood: rate-limited lines, no tracebacks.

- `LogLimiter.allow(key)`: at most `burst` lines per key in each `window` seconds; the first line after a
  quiet spell says how many were suppressed meanwhile (`suppressed()`).
- `quiet_grpc_decode_errors()`: gRPC logs a 7-line ERROR traceback for every request whose bytes do not
  parse (anyone who can reach a port can send them). The filter it installs on gRPC's server logger turns
  each into one WARNING line naming the method, rate limited; every other gRPC record passes unchanged.
  Installing it twice installs it once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

__all__ = ["LogLimiter", "quiet_grpc_decode_errors"]

_GRPC_SERVER_LOGGER = "grpc._cython.cygrpc"
_METHOD = re.compile(r"\[(/[^\]]+)\]")  # "... raised by servicer method [/package.Service/Method]"


class LogLimiter:
    """Per-key token windows: `allow(key)` is True for at most `burst` calls per `window` seconds."""

    def __init__(self, burst: int = 5, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if count >= self.burst:
            self._windows[key] = (start, count)
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if len(self._windows) > 1024:  # keys come from the network: keep the table bounded
                self._windows.clear()
            return False
        self._windows[key] = (start, count + 1)
        return True

    def suppressed(self, key: str) -> str:
        """' (N more suppressed)' once after lines of `key` were dropped, else ''."""
        n = self._suppressed.pop(key, 0)
        return f" ({n} more suppressed)" if n else ""


class _DecodeErrorFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__("")
        self.limiter = LogLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or type(exc).__name__ != "DecodeError":
            return True
        found = _METHOD.search(record.getMessage())
        method = found.group(1) if found else "a gRPC method"
        if not self.limiter.allow("decode"):
            return False
        record.msg = "refused a malformed request to %s: %s%s"
        record.args = (method, exc, self.limiter.suppressed("decode"))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = None
        record.exc_text = None
        return True


def quiet_grpc_decode_errors() -> None:
    logger = logging.getLogger(_GRPC_SERVER_LOGGER)
    if not any(isinstance(f, _DecodeErrorFilter) for f in logger.filters):
        logger.addFilter(_DecodeErrorFilter())
