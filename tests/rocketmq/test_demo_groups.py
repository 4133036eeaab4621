"""`dledger demo --broker --groups 2`: the story runs end to end (exit 0), names both groups' acknowledgements
around the kill, and leaves no process behind; bad options are one line, exit 2."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.process  # starts processes

pytest.importorskip("rocketmq")


def _dledger(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dledger", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _ours(root: pathlib.Path, namesrv_port: str) -> list[int]:
    """Live processes started by the demo: replicas (their config under `root`) and the NameServer."""
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        replica = any(str(root).encode() in a for a in args)
        namesrv = b"namesrv" in args and namesrv_port.encode() in args
        if (replica or namesrv) and state != "Z":
            found.append(int(proc.name))
    return found


def test_the_broker_groups_demo_tells_the_failover_and_stops_everything(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "demo"
    run = _dledger("demo", "--broker", "--groups", "2", "--messages", "40", "--keep", str(root))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for line in (
        "broker-a: leader n",
        "broker-b: leader n",
        "SIGKILL broker-a's leader",
        "broker-a failed over to n",
        "the NameServer names it master",
        "; none lost",
    ):
        assert line in out, out
    assert out.rstrip().endswith("no acknowledged message lost"), out
    since = next(line for line in out.splitlines() if "acknowledged since the kill" in line)
    counts = dict(part.split() for part in since.split(": ", 1)[1].split(", "))
    assert int(counts["broker-a"]) > 0 and int(counts["broker-b"]) >= 10, since
    port = out.split("NameServer (127.0.0.1:", 1)[1].split(")", 1)[0]
    assert port.isdigit()
    assert not _ours(root, port), "a process of the demo outlived it"
    assert not (root / "groups.json").exists()  # the NameServer stopped with them


@pytest.mark.parametrize("args", [("--groups", "1"), ("--groups", "10"), ("--messages", "0")])
def test_bad_broker_demo_options_are_one_line(args: tuple[str, ...]) -> None:
    run = _dledger("demo", "--broker", *args, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "--groups must be between 2 and 9" in run.stderr


def test_a_keep_directory_that_is_a_file_is_one_line(tmp_path: pathlib.Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    run = _dledger("demo", "--broker", "--keep", str(taken), timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().count("\n") == 0 and str(taken) in run.stderr, run.stderr
