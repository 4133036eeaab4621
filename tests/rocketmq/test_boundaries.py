"""`dledger/rocketmq/`'s protocol pieces stand on the shared network code alone: the remoting codec and
transport, the message encodings, the NameServer and the registrar never import the node runtime, the
broker store or the CLI (the broker's faces, `remoting`'s handlers, `v5` and `registration`, sit on the
store); nothing in the package imports the CLI; its codec modules stay sans-I/O."""

from __future__ import annotations

import ast
import pathlib

import dledger.rocketmq

PACKAGE = pathlib.Path(dledger.rocketmq.__file__).parent
STANDALONE = (
    "remoting/codes.py", "remoting/command.py", "remoting/codec.py", "remoting/fastjson.py", "remoting/errors.py",
    "remoting/transport.py", "remoting/msgformat.py", "registrar.py",
)  # fmt: skip
SANS_IO = (
    "codes.py", "command.py", "codec.py", "fastjson.py", "errors.py", "routes.py", "bodies.py", "kvconfig.py",
    "msgformat.py", "storemap.py",
)  # fmt: skip


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_protocol_pieces_import_only_rocketmq_and_net() -> None:
    files = [
        p for p in PACKAGE.rglob("*.py") if p.parent.name == "namesrv" or str(p.relative_to(PACKAGE)) in STANDALONE
    ]
    assert len(files) > 10
    for path in files:
        for name in _imports(path):
            if name.startswith("dledger"):
                assert name.startswith(("dledger.rocketmq", "dledger.net")), f"{path.name} imports {name}"


def test_nothing_in_rocketmq_imports_the_cli() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not any(n == "dledger.cli" or n.startswith("dledger.cli.") for n in _imports(path)), path.name


def test_codecs_do_no_io() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name in SANS_IO:
            banned = {"asyncio", "socket", "selectors", "threading", "subprocess"} & _imports(path)
            assert not banned, f"{path.name} imports {banned}"
