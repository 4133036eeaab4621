"""Suite-wide settings and markers.

- No hypothesis example has a wall-clock deadline, since the suite must pass on a loaded machine (a slow
  example is not a failure; a wrong one is).
- `slow` tests run only when the `-m` expression names them (`pytest -m slow`); any other selection, such
  as `pytest -m "not process"`, leaves them out as a plain `pytest` does.
- `process` marks every test that starts an operating-system process (nodes, brokers, CLI subprocesses,
  jepsen_like runs), so that `pytest -m "not process"` runs the fast in-process tests alone. The marker is
  kept honest: a test without it that starts a process fails, naming the marker.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("dledger", deadline=None)
settings.load_profile("dledger")

PROCESS = "process"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


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
