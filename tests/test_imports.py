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


def module_name(path: Path) -> str:
    """The dotted name of a module file inside the package (``sweeps.run``)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _local_imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `path` imports anywhere (top level, inside
    functions, under TYPE_CHECKING), as dotted names relative to the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]  # what a relative import starts from
    found = set()

    def add(dotted: str) -> None:
        # the longest known module named by `dotted` (a.b.c may be module a.b's attribute c)
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in known:
                found.add(".".join(parts[:n]))
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("charrnn_ext."):
                stem = node.module.removeprefix("charrnn_ext.")
            else:
                continue
            for alias in node.names:  # `from . import engine` names a module; `from .x import f` a name in x
                add(f"{stem}.{alias.name}" if stem else alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("charrnn_ext."):
                    add(alias.name.removeprefix("charrnn_ext."))
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in files} | {"_core"}
    graph = {module_name(p): _local_imports(p, known) for p in files}
    graph = {name: deps - {name} for name, deps in graph.items() if name}  # the package's own __init__ aside
    return graph


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
    assert "sweeps.settings" in graph["sweeps.study"] and "config" in graph["sweeps.space"]  # and the subpackages'
    assert find_cycle(graph) is None, find_cycle(graph)


def test_only_the_engine_imports_the_core():
    """engine.py is the one Python door to the C++ extension: every other
    module, the package's __init__ included, goes through it."""
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in files} | {"_core"}
    users = sorted(module_name(p) or "__init__" for p in files if "_core" in _local_imports(p, known))
    assert users == ["engine"]


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
