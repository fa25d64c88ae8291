"""Plugins: built-ins register like third-party ones; a real installed entry point is discovered and runs."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from viz_server import plugins
from viz_server.testing import check_plugin

EXAMPLE = Path(__file__).parent / "data" / "example_plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install the example plugin package into a private folder (a real dist-info + entry point)."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "example_plugin"
    shutil.copytree(EXAMPLE, source)  # build outside the repository: no build/ or egg-info left behind
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile",
         "--target", str(target), str(source)],
        check=True, capture_output=True, cwd=tmp_path_factory.mktemp("build"),
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    plugins.reset_plugin_manager()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("viz_example_plugin", None)
    plugins.reset_plugin_manager()


def test_builtins_are_registered_through_pm_register():
    manager = plugins.plugin_manager()
    names = {manager.get_name(plugin) for plugin in manager.get_plugins()}
    assert set(plugins.DEFAULT_PLUGINS) <= names
    assert "saliency" in plugins.techniques()


LINEAR_ONLY = {"class_templates"}  # needs a model whose first layer is fully connected


@pytest.mark.parametrize("module_name", plugins.DEFAULT_PLUGINS)
def test_builtin_plugins_pass_the_contract_test(module_name, shapes_model, digits_model):
    from viz_server.testing import check_technique_contract

    for technique in importlib.import_module(module_name).register_techniques():
        check_technique_contract(technique, digits_model if technique.name in LINEAR_ONLY else shapes_model)


def test_installed_plugin_is_listed_and_runnable(installed_example, shapes_model):
    described = {plugin["name"]: plugin for plugin in plugins.describe_plugins()}
    example = described["example"]
    assert example["source"] == "viz-example-plugin" and example["version"] == "0.3.0"
    assert [t["name"] for t in example["techniques"]] == ["gradient_x_input"]
    check_plugin(importlib.import_module("viz_example_plugin"), shapes_model)


def test_installed_plugin_through_the_cli(installed_example, tmp_path, shape_pictures):
    env = {**os.environ, "PYTHONPATH": str(installed_example) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    listed = subprocess.run([sys.executable, "-m", "viz_server.cli", "plugins", "--json"], env=env, capture_output=True, text=True, check=True)
    assert "gradient_x_input" in {t["name"] for p in json.loads(listed.stdout) for t in p["techniques"]}
    image = tmp_path / "circle.png"
    image.write_bytes(shape_pictures[0][1])
    ran = subprocess.run(
        [sys.executable, "-m", "viz_server.cli", "run", "gradient_x_input", "shapes_cnn", "--image", str(image),
         "--absolute", "false", "--out", str(tmp_path / "out"), "--json"],
        env=env, capture_output=True, text=True,
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["provenance"]["params"] == {"target": "top1", "absolute": False}
    assert (tmp_path / "out" / "gxi_0.png").is_file()


def test_broken_technique_is_reported_not_loaded():
    from viz_server import hookimpl
    from viz_server.techniques import Technique

    class Broken(Technique):
        name = "broken one"
        title = "Broken"
        family = "magic"
        summary = "x"

        def run(self, ctx, params):
            raise AssertionError

    class BrokenPlugin:
        @hookimpl
        def register_techniques(self):
            return [Broken()]

    manager = plugins.plugin_manager()
    plugin = BrokenPlugin()
    manager.register(plugin, name="broken")
    try:
        assert "broken one" not in plugins.techniques()
        problems = next(p for p in plugins.describe_plugins() if p["name"] == "broken")["problems"]
        assert any("family" in problem for problem in problems["broken one"])
    finally:
        manager.unregister(plugin)
