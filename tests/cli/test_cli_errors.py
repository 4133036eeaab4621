"""Every `dledger` command, given bad input, says what is wrong in one line on stderr and exits non-zero.

A user error is never a Python traceback: each case below runs the real command line in a subprocess.
"""

from __future__ import annotations

import pathlib
import socket

import pytest

from dledger.commitlog import SegmentedLog
from dledger.testing.launcher import free_ports
from tests.support import run_dledger

pytestmark = pytest.mark.process

NOWHERE = "n0-127.0.0.1:1"  # nothing listens on port 1


def cases(tmp: pathlib.Path) -> dict[str, list[str]]:
    """Case name -> argv; `tmp` is an empty directory (as a store that is not one, or a cluster that is not),
    where `write_typo_conf` puts the config file with a misspelled key. Touches no disk, so it names the cases."""
    conf = tmp / "typo.conf"
    peers = ["--peers", NOWHERE, "--timeout", "1"]
    return {
        "no command": [],
        "unknown command": ["frobnicate"],
        "node without settings": ["node"],
        "node missing config file": ["node", "--config", str(tmp / "none.conf")],
        "node misspelled key": ["node", "--config", str(conf)],
        "node peers with commas": ["node", "--id", "n0", "--peers", "n0-127.0.0.1:2,n1-127.0.0.1:3",
                                   "--store-dir", str(tmp / "s")],
        "node id not a peer": ["node", "--id", "n9", "--peers", NOWHERE, "--store-dir", str(tmp / "s")],
        "node host does not resolve": ["node", "--id", "n0", "--peers", "n0-no.such.host.invalid:4000",
                                       "--store-dir", str(tmp / "s")],
        "node address not on this host": ["node", "--id", "n0", "--peers", "n0-192.0.2.1:4000",
                                          "--store-dir", str(tmp / "s")],
        "node metrics port text": ["node", "--metrics-port", "http"],
        "node metrics port range": ["node", "--id", "n0", "--peers", "n0-127.0.0.1:2", "--store-dir",
                                    str(tmp / "s"), "--metrics-port", "70000"],
        "node tls half given": ["node", "--id", "n0", "--peers", "n0-127.0.0.1:2", "--store-dir", str(tmp / "s"),
                                "--tls-ca", str(tmp / "ca.pem")],
        "broker without config": ["broker"],
        "broker missing config file": ["broker", "--config", str(tmp / "none.conf")],
        "broker misspelled key": ["broker", "--config", str(conf)],
        "cluster no store dir": ["cluster"],
        "cluster zero nodes": ["cluster", "--nodes", "0", "--store-dir", str(tmp / "c")],
        "cluster base port range": ["cluster", "--base-port", "70000", "--store-dir", str(tmp / "c")],
        "cluster stop no dir": ["cluster", "stop"],
        "cluster stop not a cluster": ["cluster", "stop", str(tmp)],
        "append no peers": ["append", "x"],
        "append bad peers": ["append", "--peers", "n0", "x"],
        "append config missing": ["append", "--config", str(tmp / "none.conf"), "x"],
        "append nobody listening": ["append", *peers, "x"],
        "get negative index": ["get", *peers, "--", "-1"],
        "get huge index": ["get", *peers, "99999999999999999999999"],
        "get text index": ["get", *peers, "first"],
        "status not a cluster": ["status", "--cluster", str(tmp)],
        "status tls ca missing": ["status", *peers, "--tls-ca", str(tmp / "ca.pem")],
        "transfer-leader no target": ["transfer-leader", *peers],
        "transfer-leader nobody listening": ["transfer-leader", *peers, "--to", "n0"],
        "compact no node": ["compact", *peers],
        "compact unknown node": ["compact", "n7", *peers],
        "member bad action": ["member", "frob", *peers],
        "member add no id": ["member", "add", *peers],
        "member add no address": ["member", "add", "n3", *peers],
        "member add bad address": ["member", "add", "n3", "--address", "host-without-port", *peers],
        "log no subcommand": ["log"],
        "log verify missing dir": ["log", "verify", str(tmp / "none")],
        "log verify not a store": ["log", "verify", str(tmp)],
        "log dump negative from": ["log", "dump", str(tmp), "--from", "-1"],
        "log dump to below from": ["log", "dump", str(tmp), "--from", "5", "--to", "3"],
        "bench no subcommand": ["bench"],
        "bench storage dir missing": ["bench", "storage", "--quick", "--dir", str(tmp / "none")],
        "demo too few entries": ["demo", "--entries", "1"],
    }  # fmt: skip


def write_typo_conf(tmp: pathlib.Path) -> None:
    (tmp / "typo.conf").write_text(
        f"dLegerPeers={NOWHERE}\ndLegerSelfId=n0\nstorePathRootDir={tmp}/s\nflushDiskTpye=SYNC_FLUSH\n"
    )


NAMES = list(cases(pathlib.Path("/nonexistent")))


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path: pathlib.Path, name: str) -> None:
    write_typo_conf(tmp_path)
    argv = cases(tmp_path)[name]
    out = run_dledger(*argv, timeout=120)
    assert out.returncode != 0, f"{name}: exit 0\n{out.stdout}"
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, f"{name}: {len(lines)} lines on stderr:\n{out.stderr}"
    assert lines[0].startswith("dledger"), lines[0]


@pytest.mark.parametrize("command", ["node", "broker"])
def test_a_store_in_use_is_one_line(tmp_path: pathlib.Path, command: str) -> None:
    """The store's lock is held (here by this test process): the second opener says so, no traceback."""
    port = free_ports(1)[0]
    conf = tmp_path / "broker.conf"
    conf.write_text(f"dLegerPeers=n0-127.0.0.1:{port}\ndLegerSelfId=n0\nstorePathRootDir={tmp_path}/s\n"
                    f"grpcServerPort={free_ports(1)[0]}\n")  # fmt: skip
    with SegmentedLog.open(tmp_path / "s" / "log"):
        out = run_dledger(command, "--config", str(conf), timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "store is in use" in lines[0], out.stderr


@pytest.mark.parametrize("held", ["dLegerPeers", "grpcServerPort"])
def test_broker_port_in_use_is_one_line_naming_it(tmp_path: pathlib.Path, held: str) -> None:
    """Checked before the replica builds anything: no store directory is left behind."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        busy = sock.getsockname()[1]
        node, grpc = (busy, free_ports(1)[0]) if held == "dLegerPeers" else (free_ports(1)[0], busy)
        conf = tmp_path / "broker.conf"
        conf.write_text(f"dLegerPeers=n0-127.0.0.1:{node}\ndLegerSelfId=n0\nstorePathRootDir={tmp_path}/s\n"
                        f"grpcServerPort={grpc}\n")  # fmt: skip
        out = run_dledger("broker", "--config", str(conf), timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{busy}" in lines[0] and "in use" in lines[0], out.stderr
    assert not (tmp_path / "s").exists()


def test_member_add_checks_the_address_before_asking_the_group() -> None:
    out = run_dledger("member", "add", "n3", "--address", "nonsense", "--peers", NOWHERE, "--timeout", "1")
    assert out.returncode == 2 and out.stderr.startswith("dledger: --address: 'nonsense' is not host:port"), out.stderr
