"""Input conventions read from the file's producer: Ultralytics, PaddlePaddle, the torch exporter, and a plugin's,
each recorded as the source of the fields it sets; what is not certain stays flagged on the model and on every
result."""

from __future__ import annotations

import json

import numpy as np
from task_models import export_task_model, paddle2onnx_style

from viz_server import hookimpl, load_model, plugins
from viz_server.conventions import InputConvention
from viz_server.runner import run_technique
from viz_server.testing import sample_inputs

ULTRALYTICS = (
    ("author", "Ultralytics"),
    ("imgsz", "[32, 32]"),
    ("stride", "32"),
    ("task", "detect"),
    ("names", "{0: 'cat', 1: 'dog', 2: 'bird'}"),
)


def test_an_ultralytics_export_is_fed_rgb_in_0_1_without_mean_or_std():
    model = load_model(export_task_model("yolo_anchors_first", metadata=ULTRALYTICS), use_cache=False)
    spec = model.spec
    assert (spec.value_range, spec.mean, spec.std, spec.channel_order) == ((0.0, 1.0), (0.0,) * 3, (1.0,) * 3, "RGB")
    assert spec.labels == ("cat", "dog", "bird") and spec.task == "detection"
    assert spec.guessed == () and spec.guessed_input() == ""
    assert "Ultralytics export" in spec.source("mean") and spec.source("labels") == "the model's metadata"


def test_a_paddle2onnx_text_detector_takes_paddleocrs_convention_as_a_guess():
    model = load_model(paddle2onnx_style(export_task_model("text_detector")), use_cache=False)
    spec = model.spec
    assert spec.task == "dense" and spec.channel_order == "BGR"
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert {"normalization", "channel_order", "image_size"} <= set(spec.guessed)
    assert "PaddleOCR text detector" in spec.source("channel_order") and spec.source("channel_order").endswith("a guess")
    caveat = spec.guessed_input()
    assert "channel_order BGR" in caveat and "PaddlePaddle export" in caveat


def test_a_torch_export_names_the_torchvision_convention_it_guessed():
    model = load_model(export_task_model("variable_size"), use_cache=False)
    assert model.spec.mean == (0.485, 0.456, 0.406) and "normalization" in model.spec.guessed
    assert model.spec.source("mean") == "torch export, torchvision/timm convention (producer pytorch), a guess"


def test_the_user_and_the_metadata_win_over_a_convention():
    metadata = (*ULTRALYTICS, ("mean", "[0.5, 0.5, 0.5]"))
    model = load_model(export_task_model("yolo_anchors_first", metadata=metadata), std="0.25", use_cache=False)
    assert model.spec.mean == (0.5,) * 3 and model.spec.source("mean") == "the model's metadata"
    assert model.spec.std == (0.25,) * 3 and model.spec.source("std") == "given by you"
    assert "Ultralytics" in model.spec.source("value_range")


def test_a_plugins_convention_is_asked_before_the_builtins():
    class House(InputConvention):
        name, title, certain = "house", "our house exporter", True

        def recognizes(self, facts):
            return facts.metadata.get("exporter") == "house"

        def fields(self, facts):
            return {"value_range": [0, 255], "mean": [127.5], "std": [127.5], "channel_order": "RGB", "layout": "NCHW"}

    class Plugin:
        @hookimpl
        def register_input_conventions(self):
            return [House()]

    plugins.plugin_manager().register(Plugin(), name="house_conventions")
    try:
        model = load_model(export_task_model("variable_size", metadata=(("exporter", "house"),)), use_cache=False)
    finally:
        plugins.reset_plugin_manager()
    assert model.spec.value_range == (0.0, 255.0) and model.spec.source("value_range") == "our house exporter"
    assert "normalization" not in model.spec.guessed


def test_every_result_names_the_guessed_input_convention():
    guessed = load_model(export_task_model("variable_size"), use_cache=False)
    pictures = sample_inputs(1)
    result = run_technique("saliency", guessed, pictures, {"sanity_check": False, "faithfulness": False})
    assert result.caveats[0].startswith("The model's input convention is partly guessed") and "mean 0.485,0.456,0.406" in result.caveats[0]
    assert json.loads(json.dumps(result.provenance["spec"]))["sources"]  # the sources travel with the result
    assert np.isfinite(result.arrays["saliency"]).all()


def test_a_shipped_model_states_its_convention_and_results_say_nothing_of_guesses(shapes_model):
    assert shapes_model.spec.guessed == () and shapes_model.spec.guessed_input() == ""
