"""Plugins: built-ins register like third-party ones; a real installed entry point is discovered and runs."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_zoo import tiny_model

from viz_server import installed, plugins
from viz_server.testing import check_plugin

EXAMPLE = Path(__file__).parent / "data" / "example_plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install the example plugin package into a private folder (a real dist-info + entry point)."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("source") / "example_plugin"
    shutil.copytree(EXAMPLE, source)  # build outside the repository: no build/ or egg-info left behind
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.mktemp("build"),
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    plugins.reset_plugin_manager()
    yield target
    sys.path.remove(str(target))
    for name in [name for name in sys.modules if name.startswith("viz_example_plugin")]:
        sys.modules.pop(name)
    plugins.reset_plugin_manager()


def test_builtins_are_registered_through_pm_register():
    import viz_server_plugins

    manager = plugins.plugin_manager()
    names = {manager.get_name(plugin) for plugin in manager.get_plugins()}
    assert set(plugins.DEFAULT_PLUGINS) | set(viz_server_plugins.PLUGINS) <= names
    assert "saliency" in installed.techniques()
    assert not plugins.problems()


LINEAR_ONLY = {"class_templates"}  # needs a model whose first layer is fully connected
TECHNIQUE_MODULES = [name for name in importlib.import_module("viz_server_plugins").PLUGINS if hasattr(importlib.import_module(name), "register_techniques")]


@pytest.mark.parametrize("module_name", TECHNIQUE_MODULES)
def test_builtin_plugins_pass_the_contract_test(module_name, shapes_model, digits_model):
    from viz_server.testing import check_technique_contract

    for technique in importlib.import_module(module_name).register_techniques():
        model = digits_model if technique.name in LINEAR_ONLY else shapes_model
        if not getattr(technique, "fits", lambda _model: True)(model):
            model = None  # the contract test's own choice: the shipped shapes ViT for a transformer's method
        check_technique_contract(technique, model)


@pytest.mark.slow  # pip-installs the example plugin
def test_installed_plugin_is_listed_with_every_hook(installed_example):
    described = {plugin["name"]: plugin for plugin in installed.describe_plugins()}
    technique_module = described["viz_example_plugin.gradient_x_input"]
    assert technique_module["source"] == "viz-example-plugin" and technique_module["version"] == "0.4.0"
    assert [t["name"] for t in technique_module["techniques"]] == ["gradient_x_input"]
    hooks = {hook for plugin in described.values() if plugin["source"] == "viz-example-plugin" for hook in plugin["hooks"]}
    assert {"register_techniques", "register_artifact_renderers", "register_converters", "register_output_decoders"} <= hooks
    assert not plugins.problems()
    # registered as an eager load would: every built-in first, so pluggy calls the installed plugin's hooks first
    sources = [plugin["source"] for plugin in plugins.registered_plugins()]
    assert sources == sorted(sources, key=lambda source: source != "built-in") and sources[-1] == "viz-example-plugin"
    callers = [impl.plugin_name for impl in reversed(plugins.plugin_manager().hook.register_techniques.get_hookimpls())]
    assert callers[0] == "viz_example_plugin.gradient_x_input"


@pytest.mark.slow  # pip-installs the example plugin
def test_third_party_attribution_gets_the_toolkit_checks(installed_example, shapes_model):
    """Written from docs/plugins.md alone, the example's attribution gets SmoothGrad, the sanity check,
    faithfulness curves and the pictures, like every built-in class attribution."""
    from viz_server.presentation import ArtifactLinks, render_artifact
    from viz_server.runner import run_technique
    from viz_server.testing import sample_inputs

    technique = installed.get_technique("gradient_x_input")
    assert {"smooth_samples", "sanity_check", "faithfulness", "target", "absolute"} <= {param.name for param in technique.params}
    (result,) = check_plugin(importlib.import_module("viz_example_plugin.gradient_x_input"), shapes_model)
    assert result.metrics["sanity_check"]["verdict"].startswith("Sanity check")
    assert len(result.metrics["deletion_auc"]) == len(result.metrics["insertion_auc"]) == 2
    kinds = [artifact.kind for artifact in result.artifacts]
    assert kinds.count("image") >= 6 and "plot" in kinds and "histogram" in kinds
    smoothed = run_technique("gradient_x_input", shapes_model, sample_inputs(1), {"smooth_samples": 4, "sanity_check": False})
    plain = run_technique("gradient_x_input", shapes_model, sample_inputs(1), {"sanity_check": False})
    assert not (smoothed.arrays["gradient_x_input"] == plain.arrays["gradient_x_input"]).all()
    histogram = next(artifact for artifact in result.artifacts if artifact.kind == "histogram")
    html = render_artifact(histogram.to_json(), ArtifactLinks(src=None))
    assert "<svg" in html and html.count("<rect") == 12


@pytest.mark.slow  # pip-installs the example plugin
def test_third_party_converter_through_its_hook(installed_example):
    from viz_server import load_model

    data = tiny_model("ThresholdedRelu")
    model = load_model(data, use_cache=False)
    assert model.conversion.worst_rel_error < 1e-5 and model.conversion.gradient_norm > 0
    assert next(layer for layer in model.layers if layer.name == "act").op == "ThresholdedRelu"
    manager = plugins.plugin_manager()
    manager.set_blocked("viz_example_plugin.thresholded_relu")
    try:  # without its converter the model runs forward-only on onnxruntime, which says why
        unconverted = load_model(data, use_cache=False)
        assert unconverted.module is None and "ThresholdedRelu" in unconverted.forward_only
    finally:
        plugins.reset_plugin_manager()


@pytest.mark.slow  # pip-installs the example plugin
def test_third_party_output_decoder_through_its_hook(installed_example):
    from viz_server import load_model
    from viz_server.errors import UserError

    model = load_model(tiny_model("Relu", output_units=1, metadata={"task": "regression"}), use_cache=False)
    assert (model.spec.task, model.decoder.name) == ("regression", "regressed_value") and "task" not in model.spec.guessed
    decoded = model.decode(model.predict(model.spec.unit_to_model(np.zeros((2, 8, 8, 3), np.float32))))
    assert len(decoded) == 2 and isinstance(decoded[0]["value"], float)
    unclaimed = load_model(tiny_model("Relu", output_units=1), use_cache=False)
    assert (unclaimed.spec.task, unclaimed.decoder.name) == ("classification", "class_scores") and "task" in unclaimed.spec.guessed
    plugins.plugin_manager().set_blocked("viz_example_plugin.regression")
    try:
        with pytest.raises(UserError, match="no installed output decoder reads a regression output"):
            load_model(tiny_model("Relu", output_units=1, metadata={"task": "regression"}), use_cache=False)
    finally:
        plugins.reset_plugin_manager()


@pytest.mark.slow  # pip-installs the example plugin
def test_installed_plugin_through_the_cli(installed_example, tmp_path, shape_pictures):
    env = {**os.environ, "PYTHONPATH": str(installed_example) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    listed = subprocess.run([sys.executable, "-m", "viz_server.cli", "plugins", "--json"], env=env, capture_output=True, text=True, check=True)
    assert "gradient_x_input" in {t["name"] for p in json.loads(listed.stdout) for t in p["techniques"]}
    image = tmp_path / "circle.png"
    image.write_bytes(shape_pictures[0][1])
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "viz_server.cli",
            "run",
            "gradient_x_input",
            "shapes_cnn",
            "--image",
            str(image),
            "--absolute",
            "false",
            "--sanity-check",
            "false",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["provenance"]["params"]["absolute"] is False and summary["provenance"]["contract_version"]
    assert (tmp_path / "out" / "gradient_x_input_0.png").is_file()


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
        assert "broken one" not in installed.techniques()
        problems = next(p for p in installed.describe_plugins() if p["name"] == "broken")["problems"]
        assert any("family" in problem for problem in problems["broken one"])
    finally:
        manager.unregister(plugin)
