"""`dledger node` as a user meets it: config warnings are one readable line, config and store errors one line."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dledger.testing.launcher import free_ports
from tests.support import run_dledger, spawn, stop_group

pytestmark = pytest.mark.process

PEERS = "n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913"


def test_unknown_key_warning_is_one_line_not_a_logging_error(tmp_path: pathlib.Path) -> None:
    """The log format names the node and term; a record logged before the node exists must still format."""
    conf = tmp_path / "broker.conf"
    conf.write_text(f"dLegerPeers={PEERS}\nsomeUnknownSetting=1\n")  # missing keys: exits after the warning
    out = run_dledger("node", "--config", str(conf))
    assert out.returncode == 2
    assert "Logging error" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "someUnknownSetting" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]


def test_misspelled_key_exits_2_with_one_line_naming_the_likely_key(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "broker.conf"
    conf.write_text(f"dLegerPeers={PEERS}\ndLegerSelfId=n0\nstorePathRootDir={tmp_path}/s\nflushDiskTpye=SYNC_FLUSH\n")
    out = run_dledger("node", "--config", str(conf))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "did you mean 'flushDiskType'" in out.stderr, out.stderr
    assert not (tmp_path / "s").exists()


def test_a_group_named_like_a_broker_serves_appends(tmp_path: pathlib.Path) -> None:
    """`dLegerGroup=broker-a`: the node starts, and a client of that group appends and reads."""
    peers = f"n0-127.0.0.1:{free_ports(1)[0]}"
    with running_node(tmp_path / "n0", peers, "--group", "broker-a"):
        appended = run_dledger("append", "--peers", peers, "--group", "broker-a", "hello", "--timeout", "20")
        assert appended.returncode == 0, appended.stderr
        index = appended.stdout.split()[0]
        got = run_dledger("get", "--peers", peers, "--group", "broker-a", index, "--timeout", "20")
        assert got.returncode == 0 and '"data": "hello"' in got.stdout, got.stderr


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a refused command (anything else, such as a traceback, fails the test)."""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_peers_separated_by_commas_is_a_config_error() -> None:
    peers = "n0-127.0.0.1:40911,n1-127.0.0.1:40912"
    out = run_dledger("node", "--id", "n0", "--peers", peers, "--store-dir", "/nonexistent")
    assert out.returncode == 2
    assert "separate the peers with ';'" in one_line(out)


def test_port_in_use_names_the_address_and_creates_no_store(tmp_path: pathlib.Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        out = run_dledger("node", "--id", "n0", "--peers", f"n0-127.0.0.1:{port}", "--store-dir", str(tmp_path / "s"))
    assert out.returncode == 1
    line = one_line(out)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert not (tmp_path / "s").exists()


def test_metrics_port_in_use_names_the_port(tmp_path: pathlib.Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        peers = f"n0-127.0.0.1:{free_ports(1)[0]}"
        out = run_dledger(
            "node", "--id", "n0", "--peers", peers, "--store-dir", str(tmp_path / "s"), "--metrics-port", str(port)
        )
    assert out.returncode == 1
    line = one_line(out)
    assert f"metrics port {port}" in line and "in use" in line
    assert not (tmp_path / "s").exists()


@contextmanager
def running_node(store: pathlib.Path, peers: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`dledger node` n0 with `peers`, once it printed its ready line; stopped when the block ends."""
    argv = [sys.executable, "-m", "dledger", "node", "--id", "n0", "--peers", peers, "--store-dir", str(store),
            "--log-level", "warning", *extra]  # fmt: skip
    with spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as node:
        assert node.stdout is not None and node.stderr is not None
        ready = node.stdout.readline()
        if "ready" not in ready:
            stop_group(node)
            raise AssertionError(f"node did not start: {ready}{node.stderr.read()}")
        yield node


def test_store_in_use_is_one_line(tmp_path: pathlib.Path) -> None:
    with running_node(tmp_path / "s", f"n0-127.0.0.1:{free_ports(1)[0]}"):
        out = run_dledger(
            "node", "--id", "n0", "--peers", f"n0-127.0.0.1:{free_ports(1)[0]}", "--store-dir", str(tmp_path / "s")
        )
        assert out.returncode == 1
        assert "store is in use" in one_line(out)
