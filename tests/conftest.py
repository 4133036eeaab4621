"""Suite-wide settings and markers.

- No hypothesis example has a wall-clock deadline, since the suite must pass on a loaded machine (a slow
  example is not a failure; a wrong one is).
- `slow` tests run only when the `-m` expression names them (`pytest -m slow`); any other selection, such
  as `pytest -m "not process"`, leaves them out as a plain `pytest` does.
- `sweep` tests (the simulation's full seed sweep, minutes of CPU) run under a plain `pytest` (CI's command)
  and when the `-m` expression names them (`pytest -m sweep`); any other `-m` expression leaves them out,
  so that `pytest -m "not process"` stays the fast set (it still runs the simulation's quick examples).
- `-n auto` (the addopts) starts one xdist worker per core, but twice as many for a selection that leaves
  out `process` tests: those tests mostly wait (election timers, fsyncs, polls) rather than compute (the
  fast set takes about a third of its wall time in CPU), so more workers than cores shorten it, while
  node and broker processes want a core each.
- `process` marks every test that starts an operating-system process (nodes, brokers, CLI subprocesses,
  jepsen_like runs), so that `pytest -m "not process"` runs the fast in-process tests alone. The marker is
  kept honest: a test without it that starts a process fails, naming the marker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("dledger", deadline=None)
settings.load_profile("dledger")

PROCESS = "process"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    if "not process" in (config.getoption("markexpr") or ""):
        return 2 * (os.cpu_count() or 1)
    return None  # xdist's own choice: one per core


def _left_out(markexpr: str) -> tuple[str, ...]:
    """The markers whose tests this `-m` expression leaves out unless it names them (see the docstring)."""
    out = [] if "slow" in markexpr else ["slow"]
    if markexpr and "sweep" not in markexpr:
        out.append("sweep")
    return tuple(out)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = _left_out(config.getoption("markexpr") or "")
    dropped = [item for item in items if any(item.get_closest_marker(m) for m in left_out)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        kept = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in kept]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Outside a `process` test (its fixtures included), starting a process fails the test."""
    if item.get_closest_marker(PROCESS):
        yield
        return
    original = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"{item.nodeid} starts a process ({args!r}) but is not marked `{PROCESS}`: "
            f"add `pytestmark = pytest.mark.{PROCESS}` to its module (or mark the test)",
            pytrace=False,
        )

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]
