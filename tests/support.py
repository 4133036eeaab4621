"""What every test directory shares: waiting on a condition, and running processes that never outlive a test.

Invariants:
- nothing here sleeps for a fixed time to "let things settle": a wait polls a condition against a deadline and
  fails with what it waited for (and the last error the probe raised, when it may raise);
- a process started with `spawn` runs in its own process group, and leaving the `with` block ends the whole
  group (SIGTERM, then SIGKILL after a grace period), so a failed test leaves no node or grandchild behind;
- `run_dledger` runs the real command line (`python -m dledger ...`) from the repository root, with a deadline.
Tests that use `spawn` or `run_dledger` start processes: their modules carry `pytest.mark.process`.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["ROOT", "run_dledger", "spawn", "stop_group", "wait_for", "wait_for_async"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: BaseException | None) -> AssertionError:
    because = f" (last error: {last!r})" if last is not None else ""
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}{because}")


def wait_for(
    cond: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "the condition",
    poll: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """`cond()`'s first truthy value, polled every `poll` s; AssertionError naming `what` after `timeout` s.
    Exceptions of the types in `retry_on` count as "not yet" (the last one is named if time runs out)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except retry_on as exc:
            last = exc
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(poll)


async def wait_for_async(
    cond: Callable[[], T | None], timeout: float = 10.0, what: str = "the condition", poll: float = 0.01
) -> T:
    """`wait_for` on the running event loop: polls with `asyncio.sleep`, so the loop's tasks run between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise _timed_out(what, timeout, None)
        await asyncio.sleep(poll)


def run_dledger(
    *args: str, timeout: float = 60.0, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m dledger ARGS` from the repository root, its output captured as text; its stdin is `input`, or
    empty (a command never waits on the test's terminal)."""
    stdin: dict[str, Any] = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    command = [sys.executable, "-m", "dledger", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env, **stdin)


def stop_group(proc: subprocess.Popen[Any], grace: float = 15.0) -> int:
    """SIGTERM `proc`'s process group, SIGKILL it if `proc` has not exited within `grace` s; its exit code.
    (The group is signalled only while `proc`, its leader, is not reaped yet, so its id cannot have been reused.)"""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # the group is gone already
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


@contextmanager
def spawn(argv: Sequence[str], grace: float = 15.0, **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """Start `argv` in a new session (its own process group) from the repository root; leaving the block stops
    the whole group (`stop_group`) and closes its pipes. `popen` passes on to `subprocess.Popen`."""
    popen.setdefault("cwd", ROOT)
    proc = subprocess.Popen(list(argv), start_new_session=True, **popen)
    try:
        yield proc
    finally:
        stop_group(proc, grace)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
