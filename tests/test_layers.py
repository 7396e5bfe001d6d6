"""The package's layers: every import points down (or within its own folder), and no module
imports itself back through others.

    0  wkdist.errors, wkdist.data        (no other wkdist import)
    1  wkdist.kernels                    numba functions on plain arrays
    2  wkdist.engine                     settings, structures, targets, the kernel API
    3  wkdist.tiled                      tile geometry, checkpoints, kernel store, kernel graph
    4  wkdist.krr                        mixing search, tiled Cholesky, models, the estimator
    5  wkdist.app                        config, clusters, data sets, the jobs and their outputs
    6  wkdist.cli                        one thin module per command

The package's own ``__init__`` (the public facade, mostly lazy) and ``__main__`` are outside the
layers; a module may take ``__version__`` from the facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wkdist

ROOT = Path(wkdist.__file__).parent
LAYERS = {"errors": 0, "data": 0, "kernels": 1, "engine": 2, "tiled": 3, "krr": 4, "app": 5,
          "cli": 6}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("wkdist",) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every wkdist module ``name`` imports, at module level or inside functions."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only, never imported at run time
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("wkdist"):
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.startswith("wkdist"))
    return {t for t in targets if t != name}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    from wkdist.cli.main import COMMAND_MODULES

    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # the CLI imports its command modules by name, from a table
    graph["wkdist.cli.main"] |= {f"wkdist.cli.{module}" for module in COMMAND_MODULES}
    return graph


def test_every_module_is_in_a_layer():
    outside = sorted(name for name in _modules()
                     if _layer(name) is None and name not in ("wkdist", "wkdist.__main__"))
    assert outside == []


def test_imports_point_down_or_within_a_layer():
    upward = []
    for name, targets in _graph().items():
        own = _layer(name)
        if own is None:  # the facade and __main__
            continue
        for target in targets:
            if target == "wkdist":  # __version__ only (checked below)
                continue
            if _layer(target) is None or _layer(target) > own:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_the_facade_is_only_asked_for_the_version():
    modules = _modules()
    for name, path in modules.items():
        if name in ("wkdist", "wkdist.__main__"):
            continue
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(package[: len(package) - node.level + 1]
                                + ([node.module] if node.module else []))
                if base == "wkdist":
                    assert [a.name for a in node.names] == ["__version__"], name


def test_no_import_cycles():
    """No module reaches itself through imports, function-level imports included."""
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target == "wkdist":
                continue
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_graph_is_seen():
    """The walk finds the imports it is meant to judge (a test that could not fail otherwise)."""
    graph = _graph()
    assert len(graph) > 30
    assert "wkdist.engine.settings" in graph["wkdist.tiled.store"]
    assert "wkdist.app.pipeline" in graph["wkdist.cli.run"]
    assert {f"wkdist.cli.{m}" for m in ("kernels", "status", "run")} <= graph["wkdist.cli.main"]


def test_only_the_cli_prints():
    """Library code reports through logging (or returns lines); print is the CLI's alone."""
    printing = []
    for name, path in _modules().items():
        if name.startswith("wkdist.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                printing.append(f"{name}:{node.lineno}")
    assert printing == []
