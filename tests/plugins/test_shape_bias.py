"""The cue-conflict shape-bias probe: the formula on a hand-made table, and the probe on the shipped model."""

import numpy as np
import pytest
from pictures import png_bytes

from viz_server.errors import UserError
from viz_server.runner import run_technique
from viz_server_models import shapes
from viz_server_plugins.shape_bias import parse_mapping, shape_bias


def test_formula_on_a_hand_made_decision_table():
    decisions = ["cat", "cat", "elephant", "car", "cat", "elephant"]
    shape_cues = ["cat", "cat", "cat", "cat", "cat", "elephant"]
    texture_cues = ["elephant", "elephant", "elephant", "elephant", "cat", "elephant"]
    figures = shape_bias(decisions, shape_cues, texture_cues)
    # conflicting: rows 0-3; shape hits 2, texture hit 1, neither 1; rows 4-5 agree and are ignored
    assert figures == {"shape_bias": round(2 / 3, 4), "shape_decisions": 2, "texture_decisions": 1, "neither": 1, "ignored_same_cue": 2}
    assert shape_bias(["x"], ["a"], ["b"])["shape_bias"] is None


def test_probe_on_the_shipped_model_out_of_the_box(shapes_model):
    result = run_technique("shape_bias", shapes_model, raw_params={"per_pair": 10})
    assert result.metrics["stimuli"] == 120 and result.metrics["ignored_same_cue"] == 0
    assert 0.3 < result.metrics["shape_bias"] < 0.95
    assert result.metrics["shape_decisions"] + result.metrics["texture_decisions"] + result.metrics["neither"] == 120


def test_given_stimuli_named_shape_texture(shapes_model):
    rng = np.random.default_rng(0)
    images = []
    for shape, texture in [("circle", "square"), ("cross", "triangle"), ("square", "circle"), ("triangle", "triangle")]:
        picture, _ = shapes.make_image(shape, texture, rng)
        images.append((f"{shape}-{texture}-1.png", png_bytes(picture)))
    result = run_technique("shape_bias", shapes_model, images, {"stimuli": "given"})
    assert result.metrics["ignored_same_cue"] == 1 and result.metrics["stimuli"] == 4
    with pytest.raises(UserError, match="not named"):
        run_technique("shape_bias", shapes_model, [("photo.png", images[0][1])], {"stimuli": "given"})


def test_mapping_groups_model_classes(shapes_model):
    mapping = parse_mapping("round:circle;angular:square|triangle|cross", shapes_model.spec)
    assert mapping == {"round": [0], "angular": [1, 2, 3]}
    with pytest.raises(UserError, match="does not name"):
        run_technique("shape_bias", shapes_model, raw_params={"mapping": '{"circle": ["circle"]}', "per_pair": 1})
