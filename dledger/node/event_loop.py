"""The event loop dledger's own processes run on: uvloop when it is installed, else asyncio's default.

gRPC's asyncio stack costs a loop wake-up for every completed operation (each stream read and write), and uvloop's
wake-ups are cheaper, so each peer hop and each client append costs less (docs/benchmarks.md has the figures).
`DLEDGER_EVENT_LOOP=asyncio` forces the default loop (to compare, or to rule uvloop out); `=uvloop` insists on uvloop
and fails when it is missing.

Invariant: only processes and threads that dledger starts itself take this loop (`dledger node`, `dledger
broker`, `SyncDLedgerServer`'s thread); code that embeds `DLedgerServer` in its own loop keeps its loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["ENV_VAR", "EventLoopChoiceError", "loop_factory", "loop_name", "new_event_loop", "run"]

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
