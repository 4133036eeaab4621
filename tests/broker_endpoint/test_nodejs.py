"""The official Node.js client (`rocketmq-client-nodejs` from npm) sends and receives against the group.

Skips, saying why, when `node` is not on PATH or the package is not installed: CI runs
`npm install --prefix tests/broker_endpoint/node` first. The Node.js client takes a single address, so the
script talks to one follower: its writes (sends, receives, acks) are forwarded to the leader.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from dledger.broker_adapter.broker_cli import LocalBrokerGroup
from tests.broker_endpoint.util import leader_id

NODE_DIR = pathlib.Path(__file__).parent / "node"


def test_nodejs_client_sends_and_receives(group: LocalBrokerGroup) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (no `node` on PATH)")
    if not (NODE_DIR / "node_modules" / "rocketmq-client-nodejs").is_dir():
        pytest.skip(f"rocketmq-client-nodejs is not installed: run `npm install --prefix {NODE_DIR}`")
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
