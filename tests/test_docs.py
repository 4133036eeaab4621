"""The README's examples run as written, and the user docs stay free of history.

Every fenced block in README.md follows a marker line: `<!-- doctest: run SESSION -->` or
`<!-- doctest: skip (why) -->`. The blocks of one session run in README order in one scratch home directory
(`HOME` points at a temp dir, so `~/...` in an example lands there): `sh` blocks with bash (`-e`, so any
failing command fails the test), `python` blocks with this interpreter. Sessions:
- `cli`: a detached local group on ports 40811-40813, the CLI, both Python clients, stop, `dledger log`;
- `broker`: three `dledger broker` replicas from conf/dledger/ (ports 40911-40913, 8081-8083 and the remoting
  ports 30911, 30921, 30931), then the official RocketMQ client.
A session whose fixed ports are taken on this machine is skipped, not failed: the ports are the README's.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.support import wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARK = re.compile(r"^<!-- doctest: (run (?P<session>[a-z]+)|skip \((?P<why>[^)]+)\)) -->$")
SESSIONS = {"cli": (40811, 40812, 40813), "broker": (40911, 40912, 40913, 8081, 8082, 8083, 30911, 30921, 30931)}
TIMEOUT = 90.0  # seconds for one block or one wait; generous for a loaded 2-core machine


@dataclass(frozen=True)
class Block:
    line: int  # where the fence opens (1-based)
    lang: str
    code: str
    session: str | None  # None: marked skip


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block with its marker; ValueError naming the line of a block without one."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        start, lang = i, lines[i][3:].strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"README.md line {start + 1}: a fence that never closes")
        marker = MARK.match(lines[start - 1].strip()) if start > 0 else None
        if marker is None:
            raise ValueError(f"README.md line {start + 1}: a block without a `<!-- doctest: ... -->` marker above")
        blocks.append(Block(start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n", marker.group("session")))
        i = end + 1
    return blocks


def session_blocks(name: str) -> list[Block]:
    blocks = [b for b in readme_blocks(README.read_text()) if b.session == name]
    assert blocks, f"no README block runs in session {name!r}"
    return blocks


def env_for(home: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(home))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # this venv's `dledger`
    env.pop("PYTHONPATH", None)  # the examples import the installed package, as a user's would
    return env


def run_block(block: Block, cwd: pathlib.Path, env: dict[str, str]) -> str:
    """Run one block to its end; its stdout. A failure names the README line and shows the output."""
    if block.lang == "sh":
        argv = ["bash", "-e", "-c", block.code]
    elif block.lang == "python":
        argv = [sys.executable, "-c", block.code]
    else:
        raise AssertionError(f"README.md line {block.line}: cannot run a {block.lang!r} block")
    # a new session, so that anything the block leaves in the background can be found and stopped
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"README.md line {block.line}: still running after {TIMEOUT} s\n{out!r}\n{err!r}"
        ) from None
    assert proc.returncode == 0, (
        f"README.md line {block.line} ({block.lang}) exited {proc.returncode}\n"
        f"stdout:\n{out.decode(errors='replace')}\nstderr:\n{err.decode(errors='replace')}"
    )
    return out.decode(errors="replace")


def ports_taken(ports: tuple[int, ...]) -> list[int]:
    taken = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's listener: TIME_WAIT is no owner
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


def test_every_readme_block_is_marked_and_runnable_kinds_only() -> None:
    blocks = readme_blocks(README.read_text())
    run = [b for b in blocks if b.session is not None]
    assert {b.session for b in run} == set(SESSIONS)
    assert all(b.lang in ("sh", "python") for b in run)
    # the two quick-start commands stay as a newcomer meets them
    quick = blocks[0]
    assert quick.session is None
    assert "pip install -e . && dledger demo" in quick.code
    assert "pip install -e '.[test]' && pytest" in quick.code


def test_a_block_without_a_marker_is_refused() -> None:
    with pytest.raises(ValueError, match="line 3"):
        readme_blocks("text\n\n```sh\nls\n```\n")


# what dates a text to a work period: "session 5", an issue number, a commit hash, an A/B diary
HISTORY = {
    "a work period": r"\b[Ss]ession \d",
    "an issue number": r"(?<![\w&])#\d+\b",
    "a commit hash": r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b",
    "an A/B figure": r"\bA/B\b",
}
USER_DOCS = ["README.md", "docs/operating.md", "docs/embedding.md", "docs/protocol.md", "docs/benchmarks.md"]
USER_DOCS += ["docs/testing.md", "docs/architecture.md", "CHANGELOG.md"]


def test_readme_is_a_front_door() -> None:
    assert len(README.read_bytes()) < 15_000


@pytest.mark.parametrize("name", USER_DOCS)
def test_user_docs_carry_no_history(name: str) -> None:
    text = (ROOT / name).read_text()
    for what, pattern in HISTORY.items():
        if what == "an A/B figure" and name == "docs/benchmarks.md":
            continue  # the benchmark tools' own page names the A/B tools
        found = re.search(pattern, text)
        assert found is None, f"{name} names {what}: {text[max(0, found.start() - 60) : found.end() + 60]!r}"


CODE = ["dledger", "bench", "jepsen_like", "tests", "scripts", "conf", "docs"]
A_B_TOOLS = re.compile(r"bench/\w+_ab\.py|docs/benchmarks\.md")  # the A/B tools name themselves
# code holds hex test vectors: there a commit hash is one that a sentence names as a commit
CODE_HISTORY = {
    **HISTORY,
    "a commit hash": r"(?i)\b(?:commit|fixed in|fix in|revision|rev)\s+(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b",
}


def code_files() -> list[pathlib.Path]:
    found = []
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if "_proto" in parts or "node_modules" in parts or path == pathlib.Path(__file__):
                continue
            if path.is_file() and path.suffix in (".py", ".md", ".sh", ".conf", ".js", ".proto", ".toml", ".txt"):
                found.append(path)
    return found


@pytest.mark.parametrize("top", CODE)
def test_code_comments_and_tests_carry_no_history(top: str) -> None:
    """Comments, docstrings and tests say what and why: a regression test names the bug it guards, not the run,
    the review or the commit that found or fixed it."""
    for path in code_files():
        name = path.relative_to(ROOT).as_posix()
        if not name.startswith(top + "/"):
            continue
        text = path.read_text(errors="replace")
        for what, pattern in CODE_HISTORY.items():
            if what == "an A/B figure" and A_B_TOOLS.fullmatch(name):
                continue
            found = re.search(pattern, text)
            assert found is None, f"{name} names {what}: {text[max(0, found.start() - 60) : found.end() + 60]!r}"


@pytest.mark.process
def test_cli_examples_run_as_written(tmp_path: pathlib.Path) -> None:
    taken = ports_taken(SESSIONS["cli"])
    if taken:
        pytest.skip(f"the README's ports {taken} are in use on this machine")
    env = env_for(tmp_path)
    store = tmp_path / "dledger-local"
    try:
        outputs = [run_block(block, tmp_path, env) for block in session_blocks("cli")]
    finally:
        if (store / "cluster.json").exists():  # a block failed before the README's own stop
            subprocess.run(["dledger", "cluster", "stop", str(store)], env=env, capture_output=True, timeout=TIMEOUT)
    # `dledger get ... 2` printed a committed entry (index 1 is the first leader's no-op, so usually "hello")
    got = [json.loads(line) for line in outputs[0].splitlines() if line.startswith("{")]
    assert [e["index"] for e in got] == [2]
    assert re.search(r"leadership moved to n1|n1 already leads", outputs[0])
    assert "stopped n0, n1, n2" in outputs[-1]
    assert re.search(r"entries \(1\.\.\d+\): clean", outputs[-1])  # `dledger log verify` of a stopped node


def _leader_elected(env: dict[str, str]) -> bool:
    proc = subprocess.run(
        ["dledger", "status", "--config", "conf/dledger/broker-n0.conf", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=TIMEOUT,
    )
    if proc.returncode != 0:
        return False
    nodes = json.loads(proc.stdout)
    return sum(n.get("role") == "leader" for n in nodes) == 1 and all(n.get("healthy") for n in nodes)


def _stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.mark.process
def test_broker_examples_run_as_written(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("rocketmq")
    taken = ports_taken(SESSIONS["broker"])
    if taken:
        pytest.skip(f"the README's ports {taken} are in use on this machine")
    env = env_for(tmp_path)
    start, *rest = session_blocks("broker")
    assert start.lang == "sh"
    proc = subprocess.Popen(
        ["bash", "-e", "-c", start.code], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert proc.wait(timeout=TIMEOUT) == 0
        logs = [tmp_path / "dledger-group" / f"n{n}.log" for n in range(3)]

        def serving() -> bool:
            texts = [p.read_text(errors="replace") if p.exists() else "" for p in logs]
            failed = [t for t in texts if "dledger broker: " in t]  # a replica's one-line start-up error
            assert not failed, f"a broker replica did not start:\n{failed[0]}"
            return all("ready: MessagingService" in t for t in texts)

        wait_for(serving, TIMEOUT, "three broker replicas to serve", poll=0.2)
        wait_for(lambda: _leader_elected(env), TIMEOUT, "a leader (dledger status --config ...)", poll=0.2)
        outputs = [run_block(block, ROOT, env) for block in rest]
    finally:
        _stop_group(proc.pid)  # the replicas the block started in the background, in its session
    assert "sent " in outputs[0]
    assert "got b'order-1'" in outputs[0]
