"""Foundation checks: generated protobuf code is fresh, the raft core stays sans-I/O, the CLI starts."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {"asyncio", "grpc", "os", "time", "random", "lmdb", "socket", "threading"}


def test_generated_proto_code_is_fresh(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) regenerates the code")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    fresh = gen_proto.generate(tmp_path)
    assert fresh, "the generator produced nothing"
    for path in fresh:
        committed = ROOT / "dledger" / "_proto" / path.name
        assert committed.exists(), f"{committed.name} is not committed: run scripts/gen_proto.py"
        assert committed.read_text() == path.read_text(), f"{path.name} is stale: run scripts/gen_proto.py"


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def test_raft_core_is_sans_io() -> None:
    files = list((ROOT / "dledger" / "raft").rglob("*.py"))
    assert files, "dledger/raft has no modules"
    bad = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in files
        for m in _imports(p)
        if m.split(".")[0] in FORBIDDEN_IN_CORE or m.startswith("dledger.commitlog") or m.startswith("dledger.node")
    ]
    assert not bad, bad


def test_storage_api_imports_only_stdlib() -> None:
    mods = _imports(ROOT / "dledger" / "storage_api.py")
    assert all(not m.startswith("dledger") or m == "dledger.storage_api" for m in mods), mods


def test_proto_round_trip() -> None:
    from dledger._proto import dledger_pb2 as pb

    msg = pb.PeerMessage(group="g", from_id="n0", to_id="n1")
    msg.append_entries.prev_log_index = 7
    msg.append_entries.entry_data = b"x"
    back = pb.PeerMessage.FromString(msg.SerializeToString())
    assert back.WhichOneof("body") == "append_entries"
    assert (back.append_entries.prev_log_index, back.append_entries.entry_data) == (7, b"x")


@pytest.mark.process
def test_cli_version_and_module_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dledger", "--version"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.startswith("dledger ")


@pytest.mark.process
def test_cli_usage_error_exit_code() -> None:
    out = subprocess.run([sys.executable, "-m", "dledger", "no-such-command"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr
