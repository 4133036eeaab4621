"""RocketMQ's remoting protocol, the NameServer and the registrar stand on the shared network code alone:
they never import the node runtime, the store, the 5.x face or the CLI (`registration` wires the registrar
to a replica), and the codec modules stay sans-I/O."""

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


def test_remoting_namesrv_and_registrar_import_only_each_other_and_net() -> None:
    files = [*(PACKAGE / "remoting").glob("*.py"), *(PACKAGE / "namesrv").glob("*.py"), PACKAGE / "registrar.py"]
    assert len(files) > 10
    allowed = ("dledger.rocketmq.remoting", "dledger.rocketmq.namesrv", "dledger.net")
    for path in files:
        for name in _imports(path):
            if name.startswith("dledger"):
                assert name.startswith(allowed), f"{path.name} imports {name}"


def test_codecs_do_no_io() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name in SANS_IO:
            banned = {"asyncio", "socket", "selectors", "threading", "subprocess"} & _imports(path)
            assert not banned, f"{path.name} imports {banned}"
