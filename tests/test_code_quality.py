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
