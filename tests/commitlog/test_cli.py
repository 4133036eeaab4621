"""`dledger log verify` and `dledger log dump`: output, exit codes, and clear messages for bad input."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from dledger.cli.main import main
from dledger.commitlog import Entry, EntryKind, SegmentedLog
from tests.commitlog.conftest import data_files, entries

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    with SegmentedLog.open(tmp_path / "store", segment_bytes=400) as log:
        log.append(entries(1, 30))
        log.append([Entry(30, 2, b"noop", EntryKind.NOOP), Entry(31, 2, b"\x00\xffbin")])
    return tmp_path / "store"


def test_verify_clean_store(store: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "verify", str(store)]) == 0
    out = capsys.readouterr().out
    assert "31 entries (1..31): clean" in out
    assert "BAD" not in out


def test_verify_reports_every_bad_entry_with_its_position(
    store: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = data_files(store)
    for path in (files[0], files[2]):  # damage the body of the second entry of two segments
        raw = bytearray(path.read_bytes())
        second = int.from_bytes(raw[4:8], "little")  # size of the first entry
        raw[second + 50] ^= 0xFF
        path.write_bytes(raw)
    assert main(["log", "verify", str(store)]) == 1
    bad = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 2
    for line, path in zip(bad, (files[0], files[2]), strict=True):
        second = int.from_bytes(path.read_bytes()[4:8], "little")
        assert f"{path} @ byte {second}" in line and "body CRC" in line


def test_dump_prints_the_requested_range(store: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "dump", str(store), "--from", "29", "--to", "31"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:4] for line in lines] == [
        ["29", "1", entries(29, 30)[0].kind.name, str(len(entries(29, 30)[0].data))],
        ["30", "2", "NOOP", "4"],
        ["31", "2", "NORMAL", "5"],
    ]
    assert lines[2].split("\t")[4] == "\\x00\\xffbin"


def test_dump_everything_by_default(store: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", "dump", str(store)]) == 0
    assert [int(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()] == list(range(1, 32))


def test_dump_flags_a_corrupt_entry_and_exits_1(store: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = data_files(store)[0]
    raw = bytearray(path.read_bytes())
    raw[60] ^= 1  # inside entry 1 or 2's header/body
    path.write_bytes(raw)
    assert main(["log", "dump", str(store), "--to", "5"]) == 1
    out = capsys.readouterr().out
    assert "BAD" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["log", "verify", "{missing}"], "no such directory"),
        (["log", "dump", "{missing}"], "no such directory"),
        (["log", "verify", "{file}"], "not a directory"),
        (["log", "verify", "{empty}"], "not a commit log store"),
        (["log", "dump", "{store}", "--from", "9", "--to", "3"], "below --from"),
    ],
)
def test_bad_input_gives_a_message_and_exit_2(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "file": tmp_path / "file", "empty": tmp_path / "empty", "store": store}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv", [["log"], ["log", "verify"], ["log", "dump", "d", "--from", "-1"], ["log", "dump", "d", "--to", "x"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code: str | int | None
    try:
        code = main(argv)  # our own checks return 2 ...
    except SystemExit as exc:  # ... argparse's exit with 2
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err, "a usage error says what is wrong"


def test_a_damaged_meta_file_is_reported_without_traceback(
    store: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (store / "meta").write_bytes(b"garbage")
    assert main(["log", "verify", str(store)]) == 1
    assert "meta" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_an_unreadable_store_gives_a_message(store: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.chmod(store / "data", 0)
    try:
        assert main(["log", "verify", str(store)]) == 2
        assert "not readable" in capsys.readouterr().err
    finally:
        os.chmod(store / "data", 0o755)


@pytest.mark.process
def test_python_dash_m_entry_point(store: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dledger", "log", "verify", str(store)], capture_output=True, text=True, cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout


def _node_store(root: pathlib.Path, commit: int) -> pathlib.Path:
    from dledger.commitlog import HardStateStore
    from dledger.storage_api import HardState

    with SegmentedLog.open(root / "log") as log:
        log.append(entries(1, 20))
    with HardStateStore.open(root / "state") as hs:
        hs.save(HardState(2, "n0", commit, b""))
    return root


def test_verify_checks_the_hard_state_beside_the_log(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _node_store(tmp_path / "n0", 19)
    assert main(["log", "verify", "--store-dir", str(root)]) == 0
    assert "commit 19): CRC ok" in capsys.readouterr().out


def test_verify_says_a_log_shorter_than_the_commit_index_means_recovering(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The only segment deleted beside a saved commit index: not "clean", and what the node will do."""
    root = _node_store(tmp_path / "n0", 19)
    for sub in ("data", "index"):
        for f in (root / "log" / sub).iterdir():
            f.unlink()
    assert main(["log", "verify", str(root / "log")]) == 1
    out = capsys.readouterr().out
    assert "RECOVER" in out and "start recovering" in out and "until its log again reaches 19" in out


def test_verify_reports_a_damaged_or_missing_hard_state(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import lmdb

    from dledger.commitlog.hardstate import HARD_STATE_KEY

    root = _node_store(tmp_path / "n0", 19)
    env = lmdb.open(str(root / "state"), max_dbs=8)
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(HARD_STATE_KEY))
        raw[1] ^= 1
        txn.put(HARD_STATE_KEY, bytes(raw))
    env.close()
    assert main(["log", "verify", "--store-dir", str(root)]) == 1
    assert "fails its CRC; the node will refuse to start" in capsys.readouterr().out
    env = lmdb.open(str(root / "state"), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.delete(HARD_STATE_KEY)
    env.close()
    assert main(["log", "verify", "--store-dir", str(root)]) == 1
    assert "no record beside a log up to index 19; the node will refuse to start" in capsys.readouterr().out
