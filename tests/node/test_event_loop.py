"""`dledger.node.tuning`: uvloop by default when installed, `DLEDGER_EVENT_LOOP` chooses, bad values fail."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time

import pytest

from dledger.node import tuning
from dledger.testing.launcher import free_ports
from tests.node.cluster_util import LocalGroup, peers_for
from tests.support import ROOT

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency on Linux; this platform has none")


def _name_of_running_loop(monkeypatch: pytest.MonkeyPatch, value: str | None) -> str:
    if value is None:
        monkeypatch.delenv(tuning.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(tuning.ENV_VAR, value)

    async def name() -> str:
        return tuning.loop_name(asyncio.get_running_loop())

    return tuning.run(name())


def test_uvloop_by_default_and_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _name_of_running_loop(monkeypatch, None) == "uvloop"
    assert _name_of_running_loop(monkeypatch, "uvloop") == "uvloop"
    assert _name_of_running_loop(monkeypatch, " UVLOOP ") == "uvloop"


def test_asyncio_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _name_of_running_loop(monkeypatch, "asyncio") == "asyncio"


def test_an_unknown_choice_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tuning.ENV_VAR, "tokio")
    with pytest.raises(tuning.EventLoopChoiceError, match="DLEDGER_EVENT_LOOP must be"):
        tuning.loop_factory()


def test_uvloop_asked_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tuning.ENV_VAR, "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(tuning.EventLoopChoiceError, match="not installed"):
        tuning.loop_factory()
    monkeypatch.delenv(tuning.ENV_VAR)
    assert tuning.loop_factory() is asyncio.new_event_loop  # unset: falls back quietly


@pytest.mark.process
def test_node_refuses_a_bad_choice_before_starting(tmp_path: pathlib.Path) -> None:
    (port,) = free_ports(1)
    out = subprocess.run(
        [sys.executable, "-m", "dledger", "node", "--id", "n0", "--peers", f"n0-127.0.0.1:{port}",
         "--store-dir", str(tmp_path / "s")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, tuning.ENV_VAR: "tokio"},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "DLEDGER_EVENT_LOOP must be" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()  # refused before touching the store


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_an_idle_node_wakes_about_once_per_tick(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    """uvloop's clock and timers count whole milliseconds and run a shorter delay at once: a driver that
    waits for the clock to move on would spin, thousands of wake-ups a second for 50 ticks (20 ms each)."""
    monkeypatch.setenv(tuning.ENV_VAR, choice)

    async def main() -> tuple[int, float]:
        assert tuning.loop_name(asyncio.get_running_loop()) == choice
        group = LocalGroup(tmp_path, peers_for(["n0"]))
        server = await group.start("n0")
        try:
            await group.wait_for_leader()
            stats = server.node.stats
            before, t0 = stats.wakeups, time.monotonic()
            await asyncio.sleep(1.0)
            return stats.wakeups - before, time.monotonic() - t0
        finally:
            await group.stop_all()

    wakeups, seconds = tuning.run(main())
    ticks = seconds / 0.02
    # the bug is the high end; the low end only says the driver runs (a stalled box folds missed ticks into one)
    assert 5 <= wakeups <= ticks * 2.5, (wakeups, ticks)
