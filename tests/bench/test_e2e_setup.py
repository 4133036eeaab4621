"""The e2e benchmark refuses to run without what it compares against, and its catch-up figure is a real one."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from bench.e2e import Bench, Profile
from tests.support import ROOT

pytestmark = pytest.mark.process

NO_PYSYNCOBJ = (
    "import sys; sys.modules['pysyncobj'] = None; from dledger.cli.main import main; raise SystemExit(main({}))"
)


def test_without_pysyncobj_it_names_the_extra_to_install() -> None:
    """Not `peer exited` for every PySyncObj case and ratios against nothing: one line, exit 2."""
    code = NO_PYSYNCOBJ.format(["bench", "e2e", "--quick"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.splitlines()) == 1 and "pip install 'dledger[bench]'" in out.stderr, out.stderr[-2000:]


def test_catch_up_is_measured_while_the_follower_is_behind(tmp_path: pathlib.Path) -> None:
    """With little to catch up on, the follower may be done before the first status poll (a figure of 0 MiB
    in 0.00 s): measured from the restart, catch-up counts every entry appended while it was down."""
    tiny = Profile(seconds=1.0, runs=1, payloads=(), sync_payloads=(), latency_ops=1, failovers=1,
                   catchup_bytes=1 << 20, soak_seconds=0)  # fmt: skip
    bench = Bench(tiny, 3, tmp_path, 1, ("dledger",))
    bench.catchup("dledger")
    figure = bench.figures["follower catch-up"]
    assert figure.ours is not None and figure.ours > 0, figure
