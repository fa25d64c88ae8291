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
