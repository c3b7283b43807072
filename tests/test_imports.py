"""The package's shape: no import cycle (lazy imports inside functions
included), optional heavy dependencies imported only where used, and the
public API re-exported and typed."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import charrnn_ext

PACKAGE = Path(charrnn_ext.__file__).parent


def _local_imports(path: Path) -> set[str]:
    """Modules of the package that `path` imports anywhere (top level, inside
    functions, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charrnn_ext."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("charrnn_ext."):
                    found.add(alias.name.split(".")[1])
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {"_core"}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    return {p.stem: _local_imports(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 15 and "training" in graph["model"] and "_core" in graph["engine"]  # the walk sees imports
    assert find_cycle(graph) is None, find_cycle(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_package_leaves_matplotlib_tqdm_and_torch_alone():
    code = (
        "import sys, charrnn_ext, charrnn_ext.cli; "
        "print(sorted(m for m in ('matplotlib', 'tqdm', 'torch', 'onnx', 'optuna', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api_is_exported_and_typed():
    assert (PACKAGE / "py.typed").exists()
    for name in charrnn_ext.__all__:
        assert hasattr(charrnn_ext, name), name
    try:
        installed = importlib.metadata.version("charrnn_ext")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the package is not installed (a source tree on sys.path): no metadata to compare")
    assert charrnn_ext.__version__ == installed  # the version is written once, in pyproject.toml
