"""The adapter uses only the public node API (docs/architecture.md): never raft or commitlog internals."""

from __future__ import annotations

import ast
import pathlib

import dledger.broker_adapter

ALLOWED = (
    "dledger.broker_adapter",
    "dledger.server.server",
    "dledger.server.state_machine",
    "dledger.server.config",
    "dledger.server.services",
    "dledger.server.aio_client",  # `dledger.AsyncDLedgerClient`, for the replicas' status in retention
    "dledger.server.launcher",  # local process groups and free ports, as `dledger cluster` uses them
    "dledger.server.malloc_tuning",  # `dledger.tune_malloc`, which `dledger broker` calls like `dledger node`
    "dledger.server.gc_tuning",  # `dledger.tune_gc`, likewise
    "dledger.server.event_loop",  # the loop `dledger node` runs on (uvloop), for `dledger broker` too
    "dledger.storage_api",
    "dledger.rocketmq",  # RocketMQ's own protocols: the remoting codec, the NameServer's bodies, the registrar
)


def test_the_adapter_imports_only_the_public_node_api() -> None:
    package = pathlib.Path(dledger.broker_adapter.__file__).parent
    seen = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name == "dledger" or name.startswith("dledger."):
                    seen.add(name)
                    assert name.startswith(ALLOWED), f"{path.name} imports {name}"
    assert "dledger.server.server" in seen  # the check looked at real imports
