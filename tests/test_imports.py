"""The import structure: no cycles among the installed packages (function-level imports included), the core
never imports the built-in plugins, and the light entry points import no model code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"viz_server": ROOT / "viz_server", "viz_server_plugins": ROOT / "plugins", "viz_server_models": ROOT / "models"}
"""Installed package name -> its folder in the checkout (see setup.py)."""


def first_party_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The first-party modules ``module`` imports anywhere in its file (top level, functions, TYPE_CHECKING).

    ``from package import name`` is an import of the submodule ``package.name`` when there is one, else of the
    package itself (whose ``__init__`` defines ``name``)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (resolve(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else resolve(base))
    found.discard(None)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = first_party_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "viz_server.model.pipeline" in graph["viz_server"]  # load_model's import, inside the function
    assert "viz_server.plugins" in graph["viz_server.model.convert"]


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    graph = import_graph()
    described = ["; ".join(f"{module} -> {', '.join(sorted(graph[module] & set(cycle)))}" for module in cycle) for cycle in found]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_core_never_imports_the_builtin_plugins():
    """Built-ins reach the core through the registry only, exactly as a third-party plugin does."""
    graph = import_graph()
    found = [f"{module} -> {target}" for module, targets in graph.items() if module.startswith("viz_server.") or module == "viz_server" for target in targets]
    assert not [edge for edge in found if edge.split(" -> ")[1].startswith("viz_server_plugins")]


def imported_modules(*arguments: str) -> set[str]:
    """Every module a fresh ``python -X importtime -m viz_server ARGUMENTS`` imports."""
    completed = subprocess.run([sys.executable, "-X", "importtime", "-m", "viz_server", *arguments], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("arguments", [("--version",), ("--help",), ("models",)])
def test_light_commands_import_no_model_code(arguments):
    modules = imported_modules(*arguments)
    assert "viz_server" in modules  # the measurement sees our own imports
    heavy = sorted(name for name in modules if name.split(".")[0] in ("torch", "onnxruntime", "onnx", "onnx2torch", "torchvision"))
    technique_code = sorted(name for name in modules if name.startswith("viz_server_plugins."))
    assert not heavy and not technique_code, (heavy[:5], technique_code[:5])
