"""The package layout as a checked rule (docs/architecture.md): one dependency direction between the packages,
no import cycle anywhere in dledger/ (imports inside functions and under TYPE_CHECKING count too), no module
importing another's private name, no file under dledger/ over 700 lines.

The graph is read from the source (ast), not from what an import happens to load, so a cycle hidden behind a
function-level import is found as well.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dledger"
MAX_LINES = 700

# package -> the dledger packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "dledger.raft": ("dledger.node", "dledger.client", "dledger.cli", "dledger.broker_adapter", "dledger.rocketmq"),
    "dledger.commitlog": (
        "dledger.node",
        "dledger.client",
        "dledger.cli",
        "dledger.broker_adapter",
        "dledger.rocketmq",
    ),
    "dledger.client": ("dledger.node", "dledger.cli", "dledger.broker_adapter", "dledger.rocketmq"),
    "dledger.node": ("dledger.cli", "dledger.broker_adapter", "dledger.rocketmq"),
    "dledger.broker_adapter": ("dledger.rocketmq", "dledger.cli"),
    "dledger.rocketmq": ("dledger.cli",),
    "dledger.net": ("dledger.node", "dledger.client", "dledger.cli", "dledger.broker_adapter", "dledger.rocketmq"),
    "dledger.testing": ("dledger.cli", "dledger.broker_adapter", "dledger.rocketmq"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, pathlib.Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module name of a `from ... import` (relative imports resolved against `importer`)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(name: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported dledger module, imported name or None, line) for every import anywhere in module `name`."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, node)
            if module not in MODULES:
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if sub in MODULES:  # `from package import module`
                    yield sub, None, node.lineno
                else:
                    yield module, alias.name, node.lineno


GRAPH: dict[str, set[str]] = {name: {m for m, _, _ in _imports(name)} - {name} for name in MODULES}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_real() -> None:
    assert "dledger.node.server" in GRAPH["dledger.broker_adapter.store"]
    assert any(_in(m, "dledger.raft") for m in GRAPH["dledger.node.node"])


def test_no_import_cycle() -> None:
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_imported_across_modules() -> None:
    bad = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {imported} from {module}"
        for name in MODULES
        for module, imported, line in _imports(name)
        if imported is not None and imported.startswith("_") and not imported.startswith("__") and module != name
    ]
    assert not bad, "\n".join(bad)


def test_dependency_direction() -> None:
    bad = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for package, forbidden in FORBIDDEN.items()
        if _in(name, package)
        for target in targets
        if any(_in(target, f) for f in forbidden)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_nothing_below_the_cli_imports_it() -> None:
    bad = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not _in(name, "dledger.cli") and name != "dledger.__main__"
        for target in targets
        if _in(target, "dledger.cli")
    ]
    assert not bad, "\n".join(sorted(bad))


def test_no_file_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if not _in(_module_name(p), "dledger._proto")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"
