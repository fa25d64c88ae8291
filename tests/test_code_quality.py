"""The linters CI runs, as tests, so README command 2 runs them too: ruff (lint and format) and mypy on the
public API (the files listed under [tool.mypy] in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint():
    completed = run(sys.executable, "-m", "ruff", "check", ".")
    assert completed.returncode == 0, completed.stdout[-4000:]


def test_ruff_format():
    completed = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert completed.returncode == 0, completed.stdout[-4000:]


@pytest.mark.slow
def test_mypy_on_the_public_api():
    completed = run(sys.executable, "-m", "mypy")
    assert completed.returncode == 0, completed.stdout[-4000:]


def test_mypy_covers_every_module_the_plugin_guide_presents():
    """docs/plugins.md is the API plugin authors build on: each module it names (in the core, and the toolkit)
    is type-checked, as are LoadedModel's module and the model spec a technique reads."""
    import re
    import tomllib

    checked = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    guide = (ROOT / "docs" / "plugins.md").read_text()
    named = set(re.findall(r"\bviz_server(?:\.[a-z_]+)+|\bviz_server_plugins\.toolkit(?:\.[a-z_]+)*", guide))
    named |= {"viz_server.model.loaded", "viz_server.model.spec"}

    def path_of(module: str) -> str | None:
        parts = module.split(".")
        folder = "plugins" if parts[0] == "viz_server_plugins" else "viz_server"
        while len(parts) > 1:
            relative = "/".join([folder, *parts[1:]])
            for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
                if (ROOT / candidate).is_file():
                    return candidate
            parts.pop()  # a name inside a module (viz_server.testing.check_plugin)
        return f"{folder}/__init__.py"

    def covered(path: str) -> bool:
        return any(path == entry or path.startswith(entry.rstrip("/") + "/") for entry in checked)

    missing = sorted({path for module in named if (path := path_of(module)) and not covered(path)})
    assert not missing, f"add to [tool.mypy] files: {missing}"
