"""The official Node.js client (`rocketmq-client-nodejs` from npm) sends and receives against the group.

Skips, saying why, when `node` is not on PATH or the package is not installed: CI runs
`npm install --prefix tests/rocketmq_v5/node` first. The Node.js client takes a single address, so the
script talks to one follower: its writes (sends, receives, acks) are forwarded to the leader.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import zlib

import pytest

from dledger.cli.broker import LocalBrokerGroup
from tests.rocketmq_v5.util import leader_id, message, producer, send_eventually

pytestmark = pytest.mark.process

NODE_DIR = pathlib.Path(__file__).parent / "node"


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (no `node` on PATH)")
    if not (NODE_DIR / "node_modules" / "rocketmq-client-nodejs").is_dir():
        pytest.skip(f"rocketmq-client-nodejs is not installed: run `npm install --prefix {NODE_DIR}`")
    return node


def digest_bodies() -> list[str]:
    """Bodies whose CRC32 is below 0x10000000 (a digest written as unpadded or decimal CRC32 differs from the
    padded hex for them), one whose CRC32 is large, and one of 8 KiB."""
    small = [b for b in (f"small crc {i}" for i in range(5000)) if zlib.crc32(b.encode()) < 0x10000000][:4]
    assert len(small) == 4
    large = next(b for b in (f"large crc {i}" for i in range(5000)) if zlib.crc32(b.encode()) >= 0xF0000000)
    return [*small, large, "x" * 8192]


@pytest.mark.parametrize("mode", ["simple", "push"])
def test_nodejs_consumers_never_see_a_corrupted_message(group: LocalBrokerGroup, mode: str) -> None:
    """The Node.js client checks each body against its digest and flags a mismatch `corrupted`; its
    PushConsumer discards such messages, so a wrong digest format loses every delivery."""
    node = node_or_skip()
    topic = f"digest-node-{mode}"
    with producer(group) as p:
        send_eventually(p, message(topic, b"creates the topic"))
    bodies = digest_bodies()
    run = subprocess.run(
        [node, str(NODE_DIR / "digest.js"), group.access_point.split(";")[0], topic, f"g-{topic}", mode,
         json.dumps(bodies)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=NODE_DIR,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(set(result["sent"])) == len(bodies)
    assert result["corrupted"] == []
    assert set(result["sent"]) <= set(result["received"])


def test_nodejs_client_sends_and_receives(group: LocalBrokerGroup) -> None:
    node = node_or_skip()
    follower = next(i for i in group.peers if i != leader_id(group))
    run = subprocess.run(
        [node, str(NODE_DIR / "roundtrip.js"), group.endpoints[follower], "nodejs", "g-nodejs", "10"],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=NODE_DIR,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(set(result["sent"])) == 10
    assert set(result["received"]) == set(result["sent"])
