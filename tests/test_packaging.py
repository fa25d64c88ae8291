"""The installed package is the product: the wheel, built from the checkout's files alone, installed
non-editable into a fresh virtual environment, runs the CLI, a technique, the example third-party plugin and
the web UI.

The fresh environment sees this environment's third-party packages through a ``.pth`` path entry (torch and
its CUDA libraries are gigabytes; copying them would test pip, not us). A path entry does not run the ``.pth``
files of the folder it adds, so the editable checkout's import hook stays out; the commands run from a folder
outside the checkout, and ``test_installed_modules_are_the_wheels`` checks where the modules come from. That
the wheel requires every distribution its code imports is checked from its metadata."""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def source_files() -> list[str]:
    """The files a clean clone holds (tracked, plus new ones not ignored), relative to the checkout."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the wheel is built from the files git would clone")
    return [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]


def pip(*arguments: str, python: Path | None = None) -> None:
    command = [sys.executable, "-m", "pip", *(["--python", str(python)] if python else []), *arguments, "--quiet", "--disable-pip-version-check"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("clean-clone")
    for name in source_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    dist = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(dist), str(source))
    (built,) = dist.glob("viz_server-*.whl")
    return built


@pytest.fixture(scope="module")
def environment(wheel, tmp_path_factory) -> dict:
    """A fresh virtual environment with the wheel and the example plugin installed (not editable)."""
    folder = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    purelib = Path(
        subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True).stdout.strip()
    )
    (purelib / "third_party_packages.pth").write_text("\n".join([*site.getsitepackages(), site.getusersitepackages()]) + "\n")
    pip("install", "--no-deps", "--no-index", str(wheel), python=python)
    example = tmp_path_factory.mktemp("example") / "example_plugin"
    shutil.copytree(ROOT / "tests" / "data" / "example_plugin", example)
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(example), python=python)
    data = tmp_path_factory.mktemp("data")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIZ_SERVER_THREADS")}
    env.update(VIZ_SERVER_DATA=str(data), VIZ_SERVER_CACHE=str(data / "cache"), PYTHONNOUSERSITE="1")
    return {"folder": folder, "python": python, "script": folder / "bin" / "viz-server", "env": env, "work": tmp_path_factory.mktemp("work")}


def run(environment: dict, *arguments: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [str(environment["script"]), *arguments], capture_output=True, text=True, env=environment["env"], cwd=environment["work"], timeout=600
    )
    assert completed.returncode == 0, (arguments, completed.stderr[-3000:])
    return completed


def test_the_wheel_holds_every_package_and_its_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in {"viz_server": "viz_server", "viz_server_plugins": "plugins", "viz_server_models": "models"}.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            assert f"{package}/{init.relative_to(ROOT / folder).as_posix()}" in names
    for shipped in ("viz_server/web/templates/base.html", "viz_server/web/static/style.css", "viz_server_models/shapes_cnn.onnx", "viz_server/py.typed"):
        assert shipped in names, shipped
    assert any(name.startswith("viz_server_models/samples/") and name.endswith(".png") for name in names)
    assert not any(name.startswith(("plugins/", "models/", "tests/")) for name in names)  # no generic top-level names in site-packages


def test_installed_modules_are_the_wheels(environment):
    probe = "import viz_server, viz_server_plugins.decoders, viz_server_models; print(viz_server.__file__, viz_server_plugins.decoders.__file__, viz_server_models.__file__)"
    printed = subprocess.run(
        [str(environment["python"]), "-c", probe], capture_output=True, text=True, env=environment["env"], cwd=environment["work"], check=True
    ).stdout.split()
    assert all(path.startswith(str(environment["folder"])) for path in printed), printed


def test_the_installed_cli_lists_models_and_plugins(environment):
    assert "shapes_cnn" in run(environment, "models").stdout
    described = json.loads(run(environment, "plugins", "--json").stdout)
    assert not [plugin for plugin in described if plugin["problems"]], [plugin["problems"] for plugin in described if plugin["problems"]]
    names = {technique["name"] for plugin in described for technique in plugin["techniques"]}
    assert {"saliency", "gradcam", "gradient_x_input"} <= names
    assert {plugin["source"] for plugin in described if plugin["name"].startswith("viz_example_plugin")} == {"viz-example-plugin"}


def test_the_installed_cli_inspects_and_runs_a_technique_and_the_example_plugin(environment):
    described = json.loads(run(environment, "inspect", "shapes_cnn", "--json").stdout)
    assert described["spec"]["task"] == "classification" and described["conversion"]["worst_rel_error"] < 1e-4
    sample = next(line.split()[-1] for line in run(environment, "models").stdout.splitlines() if line.startswith("sample"))
    for technique in ("saliency", "gradient_x_input"):
        out = environment["work"] / technique
        result = json.loads(
            run(environment, "run", technique, "shapes_cnn", "--image", sample, "--out", str(out), "--json", "--set", "sanity_check=false").stdout
        )
        assert result["provenance"]["technique"] == technique and (out / "result.json").is_file()
        assert any(artifact["kind"] == "image" for artifact in result["artifacts"])


def test_the_installed_server_serves_its_pages_and_files(environment):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**environment["env"], "VIZ_SERVER_STANDBY": "0"}
    server = subprocess.Popen([str(environment["script"]), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=30) as response:
                    assert response.status == 200 and b"viz-server" in response.read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the installed server did not answer"
                time.sleep(0.2)
        with urllib.request.urlopen(base + "/static/style.css", timeout=30) as response:
            assert response.status == 200 and len(response.read()) > 100
        with urllib.request.urlopen(base + "/api/plugins", timeout=30) as response:
            assert "saliency" in response.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=60)


OPTIONAL_HANDLERS = {"ImportError", "ModuleNotFoundError"}
TRANSITIVE = {"werkzeug": "flask", "markupsafe": "flask", "protobuf": "onnx"}
"""Distributions the code imports that come with a declared one (Flask's own, onnx's protobuf)."""


def required_imports(source: str) -> set[str]:
    """Top-level names a module imports outside ``try: ... except ImportError`` (those are optional)."""
    tree = ast.parse(source)
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name)
            and handler.type.id in OPTIONAL_HANDLERS
            or isinstance(handler.type, ast.Tuple)
            and {getattr(element, "id", "") for element in handler.type.elts} & OPTIONAL_HANDLERS
            for handler in node.handlers
        ):
            optional.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_wheel_declares_every_distribution_its_code_imports(wheel):
    """Every third-party module the installed code imports comes from a distribution the wheel requires (in its
    dependencies or an extra), or from one a required distribution brings (``TRANSITIVE``)."""
    import importlib.metadata
    import re

    archive = zipfile.ZipFile(wheel)
    requires = [
        line.split(":", 1)[1].strip()
        for line in archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    declared = {re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in requires}
    imported = set()
    for name in archive.namelist():
        if name.endswith(".py") and name.split("/")[0] in ("viz_server", "viz_server_plugins", "viz_server_models"):
            folder_modules = {Path(other).stem for other in archive.namelist() if other.startswith(name.rsplit("/", 1)[0] + "/")}
            imported |= {module for module in required_imports(archive.read(name).decode()) if module not in folder_modules}
    third_party = sorted(
        module for module in imported if module not in sys.stdlib_module_names and not module.startswith("viz_server") and module != "__future__"
    )
    owners = importlib.metadata.packages_distributions()
    missing = []
    for module in third_party:
        distributions = {owner.lower().replace("_", "-") for owner in owners.get(module, [module])}
        if not distributions & declared and not any(TRANSITIVE.get(owner) in declared for owner in distributions):
            missing.append(f"{module} ({', '.join(sorted(distributions))})")
    assert third_party and not missing, f"imported but not required by the wheel: {missing}"
