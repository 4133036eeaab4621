"""`dledger/rocketmq/` stands on the shared network code alone: it never imports the node runtime, the
broker adapter or the CLI (they import it), and its codec modules stay sans-I/O."""

from __future__ import annotations

import ast
import pathlib

import dledger.rocketmq

PACKAGE = pathlib.Path(dledger.rocketmq.__file__).parent
SANS_IO = ("codes.py", "command.py", "codec.py", "fastjson.py", "errors.py", "routes.py", "bodies.py", "kvconfig.py")


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_rocketmq_imports_only_itself_and_net() -> None:
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for name in _imports(path):
            if name.startswith("dledger"):
                assert name.startswith(("dledger.rocketmq", "dledger.net")), f"{path.name} imports {name}"


def test_codecs_do_no_io() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name in SANS_IO:
            banned = {"asyncio", "socket", "selectors", "threading", "subprocess"} & _imports(path)
            assert not banned, f"{path.name} imports {banned}"
