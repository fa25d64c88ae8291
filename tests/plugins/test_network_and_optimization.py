"""Seeing the network itself: weight pictures, activation maps, and images optimized to excite it."""

import numpy as np
import torch
from onnx import numpy_helper

from viz_server.runner import run_technique
from viz_server_plugins.toolkit.optimization import gaussian_blur, to_model_space

FAST = {"steps": 60}


def test_digit_templates_are_the_weights_and_look_like_digits(digits_model):
    from sklearn.datasets import load_digits

    result = run_technique("class_templates", digits_model)
    templates = result.arrays["templates"]
    assert templates.shape == (10, 8, 8, 1)
    weights = next(numpy_helper.to_array(t) for t in digits_model.onnx_model.graph.initializer if numpy_helper.to_array(t).ndim == 2)
    np.testing.assert_array_equal(templates.reshape(10, 64), weights if weights.shape == (10, 64) else weights.T)
    digits = load_digits()
    means = np.stack([digits.data[digits.target == k].mean(0) for k in range(10)])
    correlation = np.corrcoef(np.concatenate([templates.reshape(10, 64), means]))[:10, 10:]
    assert (correlation.argmax(1) == np.arange(10)).sum() >= 9
    assert [a.caption for a in result.artifacts if a.name == "template_3.png"] == ["template for 3"]


def test_filters_show_the_first_conv_in_colour(shapes_model):
    result = run_technique("filters", shapes_model)
    assert result.metrics["shown"].startswith("in colour") and result.arrays["kernels"].shape == (16, 3, 3, 3)
    deep = run_technique("filters", shapes_model, raw_params={"layer": "/features/features.4/Conv", "deep_mode": "channel", "input_channel": 5})
    assert deep.metrics["shown"] == "input channel 5 of 16"


def test_activation_maps_rank_channels_by_mean(shapes_model, shape_pictures):
    result = run_technique("activation_maps", shapes_model, [shape_pictures[2][:2]], {"layer": "/features/features.6/Relu"})
    activations = result.arrays["activations"][0]
    order = result.arrays["channel_order"][0]
    means = activations.mean(axis=(1, 2))
    assert (np.diff(means[order]) <= 1e-6).all()
    assert len([a for a in result.artifacts if a.name.startswith("overlay_0_")]) == 6


def test_class_visualizations_reach_their_class_and_differ(shapes_model):
    circle = run_technique("class_visualization", shapes_model, raw_params={"target": "circle", **FAST}, seed=1)
    cross = run_technique("class_visualization", shapes_model, raw_params={"target": "cross", **FAST}, seed=1)
    assert circle.metrics["predicted"] == "circle" and cross.metrics["predicted"] == "cross"
    assert circle.metrics["target_probability"] > 0.9 and cross.metrics["target_probability"] > 0.9
    assert np.abs(circle.arrays["class_model"] - cross.arrays["class_model"]).mean() > 0.1
    low, high = shapes_model.spec.unit_bounds()
    for result in (circle, cross):
        assert (result.arrays["class_model"][0] >= low - 1e-5).all() and (result.arrays["class_model"][0] <= high + 1e-5).all()
        assert result.arrays["objective"][-1] > result.arrays["objective"][0]
        assert len(result.arrays["frames"]) == 4


def test_neuron_visualization_raises_its_channel(shapes_model):
    for parameterization in ("fourier", "pixel"):
        result = run_technique("neuron_visualization", shapes_model, raw_params={"channel": 3, "parameterization": parameterization, **FAST})
        assert result.arrays["objective"][-1] > result.arrays["objective"][0]


def test_feature_inversion_reduces_the_content_loss(shapes_model, shape_pictures):
    result = run_technique("feature_inversion", shapes_model, [p[:2] for p in shape_pictures[:2]], {"layer": "/features/features.2/Relu", **FAST})
    for index in range(2):
        objective = result.arrays[f"{index}_objective"]  # minus the relative content loss
        assert objective[-1] > objective[0]
    assert len(result.metrics["relative_content_loss"]) == 2


def test_differentiable_spec_mapping_matches_the_spec(shapes_model):
    unit = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(to_model_space(shapes_model.spec, torch.from_numpy(unit)).numpy(), shapes_model.spec.unit_to_model(unit), rtol=1e-6, atol=1e-6)
    flat = torch.full((1, 9, 9, 3), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)


def test_embeddings_separate_classes_better_with_depth(shapes_model, tmp_path):
    from viz_server.image_sets import read_image_set
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=12, seed=5)
    labeled = read_image_set(tmp_path / "set")
    assert len(labeled) == 48 and {label for _, _, label in labeled} == {"circle", "square", "triangle", "cross"}
    layers = "/features/features.2/Relu,/features/features.14/Relu"
    result = run_technique(
        "embeddings", shapes_model, [(n, d) for n, d, _ in labeled], {"layers": layers, "method": "pca"}, labels=[label for _, _, label in labeled]
    )
    shallow, deep = result.metrics["separation"]
    assert deep["k-NN accuracy (full)"] > shallow["k-NN accuracy (full)"] + 0.2
    assert deep["silhouette (pca)"] > shallow["silhouette (pca)"]
    points = next(a for a in result.artifacts if a.kind == "points")
    assert points.rows[0] == ["x", "y", "label", "image"] and len(points.rows) == 49
    assert result.arrays["pca_0"].shape == (48, 2)


def test_grids_of_wide_maps_wrap_into_a_square_ish_picture():
    from viz_server_plugins.toolkit.pictures import grid

    wide = grid([np.zeros((48, 192), np.uint8)] * 64, gap=0)
    assert wide.shape[:2] == (48 * 16, 192 * 4)
    square = grid([np.zeros((8, 8), np.uint8)] * 64, gap=0, most=8)
    assert square.shape[:2] == (64, 64)


def test_embeddings_of_one_image_per_class_say_why_there_is_no_separation(shapes_model, shape_pictures):
    images = [(name, data) for name, data, _, _ in shape_pictures]
    labels = [label for _, _, label, _ in shape_pictures]
    result = run_technique("embeddings", shapes_model, images, {"method": "pca"}, labels=labels)
    assert all(row["k-NN accuracy (full)"] is None for row in result.metrics["separation"])
    assert any("at least two images of every class" in caveat for caveat in result.caveats)
