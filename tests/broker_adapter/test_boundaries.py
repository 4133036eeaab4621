"""The adapter uses only the public node API (docs/architecture.md): never raft or commitlog internals."""

from __future__ import annotations

import ast
import pathlib

import dledger.broker_adapter

ALLOWED = (
    "dledger.broker_adapter",
    "dledger.node.server",
    "dledger.node.state_machine",
    "dledger.node.config",
    "dledger.node.errors",
    "dledger.client.aio_client",  # `dledger.AsyncDLedgerClient`, for the replicas' status in retention
    "dledger.node.client_auth",  # the client grants: the broker admin RPC checks rights like the client API
    "dledger.storage_api",
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
    assert "dledger.node.server" in seen  # the check looked at real imports
