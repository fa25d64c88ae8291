"""Segmenters and other dense outputs: explain a class summed over the whole output or over a region."""

import pytest
import torch
from captum.attr import LayerGradCam, Saliency
from task_models import export_task_model

from viz_server import load_model
from viz_server.errors import UserError
from viz_server.runner import run_technique
from viz_server.testing import objective_for
from viz_server_plugins.toolkit.cam import class_activation_map
from viz_server_plugins.toolkit.gradients import class_gradient


@pytest.fixture(scope="module")
def segmenter():
    return load_model(export_task_model("segmenter"), labels='["background", "road", "car"]')


def test_region_gradient_and_cam_match_captum(segmenter):
    images = torch.rand(2, 3, 16, 16)
    objective = objective_for(segmenter, region="2:6,3:9", classes=[1, 2])
    targets = torch.tensor([1, 2])

    def forward(x):
        return segmenter.module(x)[:, :, 2:6, 3:9].sum((2, 3))

    reference = Saliency(forward).attribute(images.clone(), target=targets, abs=False)
    ours = class_gradient(segmenter, images, objective)
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-7)
    layer = segmenter.layers.default_cam_layer
    cam_reference = LayerGradCam(forward, segmenter.submodule(layer)).attribute(images.clone(), target=targets, relu_attributions=True)
    torch.testing.assert_close(class_activation_map(segmenter, images, objective, layer), cam_reference[:, 0].detach(), rtol=1e-5, atol=1e-7)


def test_runs_end_to_end_on_a_segmenter(segmenter, shape_pictures):
    assert segmenter.spec.num_classes == 3
    images = [(name, data) for name, data, _, _ in shape_pictures[:2]]
    result = run_technique("gradcam", segmenter, images, {"target": "road", "region": "0:8,0:8"})
    assert result.metrics["targets"] == ["class road", "class road"] and 0 <= min(result.metrics["target_probability"])
    assert len(result.metrics["deletion_auc"]) == 2
    whole = run_technique("saliency", segmenter, images, {"faithfulness": False, "sanity_check": False})
    assert whole.arrays["saliency"].shape == (2, 16, 16)


@pytest.mark.parametrize("region,fragment", [("0:40,0:4", "outside the output grid"), ("4:2,0:4", "is empty"), ("rows", "ROW0:ROW1")])
def test_bad_regions_are_one_sentence(segmenter, shape_pictures, region, fragment):
    with pytest.raises(UserError, match=fragment):
        run_technique("saliency", segmenter, [shape_pictures[0][:2]], {"region": region})


def test_region_on_a_classifier_is_refused(shapes_model, shape_pictures):
    with pytest.raises(UserError, match="only applies to dense outputs"):
        run_technique("saliency", shapes_model, [shape_pictures[0][:2]], {"region": "0:2,0:2"})


# ---- one-channel maps (DB-style text detectors) -------------------------------------------------------------


@pytest.fixture(scope="module")
def text_detector():
    return load_model(export_task_model("text_detector"), image_size="32,32", use_cache=False)


def test_a_one_channel_map_is_its_own_probability_never_a_softmax_over_one_channel(text_detector):
    import numpy as np

    from viz_server_plugins.decoders.classes import THRESHOLD

    assert text_detector.spec.task == "dense" and text_detector.conversion.output_op == "Sigmoid"
    images = torch.rand(3, 3, 32, 32)
    outputs = text_detector.predict(images.numpy())  # probabilities: the model ends in its Sigmoid
    objective = objective_for(text_detector, target="top1")
    objective.resolve(torch.from_numpy(outputs))
    probability = objective.probability(outputs, objective.choices)
    np.testing.assert_allclose(probability, outputs.reshape(3, -1).mean(1), rtol=1e-6)
    assert (probability < 1).all()  # a softmax over the one channel would be exactly 1 everywhere
    masked = objective_for(text_detector, target="top1", region="mask")
    masked.resolve(torch.from_numpy(outputs))
    above = outputs[:, 0] > THRESHOLD
    for (index, mask), expected in zip(masked.choices, above):
        assert index == 0 and torch.equal(mask.cpu(), torch.from_numpy(expected.reshape(-1)))
    assert "probability exceeds 0.5" in masked.describe(masked.choices[0])
    area = text_detector.decode(outputs)[0]["top"]
    assert not area or area[0]["area"] == pytest.approx(float(above[0].mean()), abs=1e-6)


def test_a_one_channel_text_detector_gets_curves_that_can_judge(text_detector, shape_pictures):
    images = [(name, data) for name, data, _, _ in shape_pictures[:2]]
    result = run_technique("saliency", text_detector, images, {"region": "mask", "sanity_check": False})
    assert result.metrics["targets"][0].endswith("where the model's probability exceeds 0.5")
    assert result.metrics["flat_curves"] == [False, False] and all(0 <= auc < 1 for auc in result.metrics["deletion_auc"])


def test_a_curve_that_never_moves_cannot_judge():
    import numpy as np

    from viz_server_plugins.toolkit.faithfulness import Curves
    from viz_server_plugins.toolkit.ranking import Scores, judge_only_moving_images, verdict

    fractions = np.linspace(0, 1, 5)
    flat, moving = np.ones(5), np.linspace(1, 0, 5)
    metrics = Curves(fractions, np.stack([flat, moving]), np.stack([flat, moving[::-1]])).metrics()
    assert metrics["deletion_auc"][0] is None and metrics["insertion_auc"][0] is None and metrics["deletion_auc"][1] == pytest.approx(0.5)
    assert metrics["flat_curves"] == [True, False]
    curves = Curves(fractions, np.stack([moving, moving]), np.stack([moving[::-1], moving[::-1]]))
    assert curves.legend()["deletion"] == "AUC 0.500, n = 2"
    empty_map = curves.metrics([True, False])
    assert empty_map["deletion_auc"] == [0.5, None] and curves.legend([True, False])["deletion"] == "AUC 0.500, n = 1"
    assert curves.legend([False, False])["deletion"].startswith("cannot judge")  # the plot shows no area the table withholds
    assert curves.metrics([False, False])["deletion_auc"] == [None, None]
    one_flat = Scores("a method", "method", np.zeros(2), np.stack([flat, moving]), np.stack([flat, moving]), np.zeros(2), np.zeros(2), np.ones(2, bool))
    other = Scores("random map", "baseline", np.zeros(2), np.stack([flat, flat]), np.stack([flat, flat]), np.zeros(2), np.zeros(2), np.ones(2, bool))
    assert judge_only_moving_images([one_flat, other]) == [0]  # image 1 moved for one map: its flat curves are a measurement
    assert np.isnan(one_flat.road_gap[0]) and one_flat.road_gap[1] == 0
    still = [
        Scores(label, role, np.array([0.0]), np.ones((1, 5)), np.ones((1, 5)), np.array([np.nan]), np.array([np.nan]), np.array([True]), [True])
        for label, role in (("Grad-CAM", "method"), ("random map", "baseline"))
    ]
    judge_only_moving_images(still)
    assert verdict(still)[0].startswith("The target's probability does not move when pixels are removed")
