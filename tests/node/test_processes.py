"""Real `dledger node` processes on loopback: failover under SIGKILL, sync-flush durability, config errors."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dledger.client.client_policy import EntryNotFoundError
from tests.node.procs import ProcessGroup, leader_sigkill_keeps_every_acknowledged_append
from tests.support import ROOT, run_dledger, spawn, wait_for

pytestmark = pytest.mark.process


@pytest.fixture
def group(tmp_path: pathlib.Path) -> Iterator[ProcessGroup]:
    g = ProcessGroup(tmp_path)
    yield g
    g.stop_all()


def test_leader_sigkill_keeps_every_acknowledged_append(group: ProcessGroup) -> None:
    group.start_all()
    leader_sigkill_keeps_every_acknowledged_append(group)


def test_sync_flush_survives_sigkill_of_every_node(tmp_path: pathlib.Path) -> None:
    group = ProcessGroup(tmp_path, flush="sync")
    try:
        group.start_all()
        group.wait_for_leader()
        acked: dict[int, bytes] = {}
        with group.client(timeout=10) as client:
            for k in range(40):
                data = f"durable-{k}".encode()
                acked[client.append(data).index] = data
        for node_id in list(group.procs):  # right after the acknowledgements
            group.kill(node_id)
        group.start_all()
        group.wait_for_leader()
        with group.client(timeout=10) as client:

            def every_ack_readable() -> bool:
                # a restarted follower serves an entry only once its commit index has caught up again
                try:
                    return all(client.get(index).data == data for index, data in acked.items())
                except EntryNotFoundError:
                    return False

            wait_for(every_ack_readable, 20, "every acknowledged entry readable with its data after the restart")
    finally:
        group.stop_all()


def test_sigterm_stops_gracefully(group: ProcessGroup) -> None:
    group.start("n0")
    wait_for(lambda: "ready on" in group.log_text("n0"), what="n0 ready")
    assert "flush async, uvloop)" in group.log_text("n0")  # the node runs on uvloop (a dependency) by default
    assert group.kill("n0", sig=15) == 0
    assert "Traceback" not in group.log_text("n0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id", "n0", "--store-dir", "x"], "--peers"),
        (["--id", "n9", "--peers", "n0-127.0.0.1:1", "--store-dir", "x"], "self_id: 'n9'"),
        (["--id", "n0", "--peers", "n0-127.0.0.1:99999", "--store-dir", "x"], "host:port"),
    ],
)
def test_config_errors_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    out = run_dledger("node", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_exits_1(tmp_path: pathlib.Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_dledger("node", "--id", "n0", "--peers", f"n0-127.0.0.1:{port}", "--store-dir", str(tmp_path / "s"))
    assert out.returncode == 1, out.stderr
    assert "cannot listen" in out.stderr


def test_cli_client_commands_against_a_group(group: ProcessGroup) -> None:
    import json

    from dledger.node.config import format_peers

    group.start_all()
    leader = group.wait_for_leader()
    peers = ["--peers", format_peers(group.peers), "--group", "t"]
    out = run_dledger("append", *peers, "hello", "world")
    assert out.returncode == 0, out.stderr
    first_index = int(out.stdout.split()[0])
    got = run_dledger("get", *peers, str(first_index + 1))
    assert got.returncode == 0 and json.loads(got.stdout)["data"] == "world"
    status = run_dledger("status", *peers, "--json")
    nodes = json.loads(status.stdout)
    assert status.returncode == 0 and {n["role"] for n in nodes} == {"leader", "follower"}
    table = run_dledger("status", *peers)
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "ADDRESS", "ROLE"]
    target = next(i for i in group.peers if i != leader)
    assert run_dledger("transfer-leader", *peers, "--to", target).returncode == 0
    assert group.wait_for_leader() == target
    missing = run_dledger("get", *peers, "999999")
    assert missing.returncode == 1 and "999999" in missing.stderr
    assert run_dledger("status").returncode == 2
    # compaction is per node; a node without state machines snapshots its (empty) state first
    compacted = run_dledger("compact", "n1", *peers)
    assert compacted.returncode == 0, compacted.stderr
    snapshot_at = int(compacted.stdout.rsplit(" ", 1)[1])
    assert snapshot_at >= first_index + 1
    assert run_dledger("compact", "nobody", *peers).returncode == 2


def test_public_names_import_lazily() -> None:
    code = "import sys, dledger.raft; assert 'grpc' not in sys.modules; import dledger; dledger.DLedgerServer"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_log_verify_and_dump_accept_a_nodes_store_dir(tmp_path: pathlib.Path) -> None:
    solo = ProcessGroup(tmp_path, ids=("s0",))
    try:
        solo.start("s0")
        solo.wait_for_leader()
        with solo.client() as client:
            client.append_batch([b"alpha", b"beta"])
    finally:
        solo.stop_all()
    store = str(tmp_path / "s0")
    verify = run_dledger("log", "verify", "--store-dir", store)
    assert verify.returncode == 0 and "clean" in verify.stdout, verify.stderr
    dump = run_dledger("log", "dump", "--store-dir", store, "--from", "2")
    assert dump.returncode == 0 and "alpha" in dump.stdout and "beta" in dump.stdout
    assert run_dledger("log", "verify").returncode == 2
    assert run_dledger("log", "verify", store, "--store-dir", store).returncode == 2


def test_cli_member_commands_grow_and_shrink_a_group_of_processes(group: ProcessGroup) -> None:
    import json

    from dledger.node.config import format_peers
    from dledger.testing.launcher import free_ports

    group.start_all()
    group.wait_for_leader()
    peers = ["--peers", format_peers(group.peers), "--group", "t", "--timeout", "20"]
    listed = run_dledger("member", "list", *peers, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {(m["id"], m["voter"]) for m in json.loads(listed.stdout)} == {("n0", True), ("n1", True), ("n2", True)}
    address = f"127.0.0.1:{free_ports(1)[0]}"
    everyone = {**group.peers, "n3": address}
    argv = [sys.executable, "-m", "dledger", "node", "--join", "--group", "t", "--id", "n3",
            "--peers", format_peers(everyone), "--store-dir", str(group.root / "n3"),
            "--peer-secret-file", str(group.root / "peer.secret")]  # a new member proves the group's secret
    with open(group.root / "n3.log", "ab") as log, spawn(argv, stdout=log, stderr=subprocess.STDOUT):
        added = run_dledger("member", "add", "n3", "--address", address, *peers)
        assert added.returncode == 0, added.stderr
        assert "n3" in added.stdout and "learner" in added.stdout
        promoted = run_dledger("member", "promote", "n3", *peers)  # the client retries while n3 catches up
        assert promoted.returncode == 0, promoted.stderr
        table = run_dledger("member", "list", *peers)
        assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
            ["n0", group.peers["n0"], "voter"],
            ["n1", group.peers["n1"], "voter"],
            ["n2", group.peers["n2"], "voter"],
            ["n3", address, "voter"],
        ]
        assert run_dledger("append", "--peers", format_peers(everyone), "--group", "t", "with-four").returncode == 0
        removed = run_dledger("member", "remove", "n3", *peers)
        assert removed.returncode == 0, removed.stderr
        after = json.loads(run_dledger("member", "list", *peers, "--json").stdout)
        assert {m["id"] for m in after} == {"n0", "n1", "n2"}
        # usage errors exit 2, a change the group refuses exits 1
        assert run_dledger("member", "promote", *peers).returncode == 2
        assert run_dledger("member", "add", "n9", *peers).returncode == 2  # no --address
        refused = run_dledger("member", "remove", "nobody", *peers)
        assert refused.returncode == 1 and "nobody" in refused.stderr

