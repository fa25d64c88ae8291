"""Saliency equals Captum's Saliency on the same converted module, and targets resolve as users expect."""

import numpy as np
import pytest
import torch
from captum.attr import Saliency as CaptumSaliency
from model_zoo import export

from viz_server import load_model
from viz_server.errors import UserError
from viz_server.model.images import decode_image
from viz_server.runner import run_technique


def chosen_classes(result) -> list[int]:
    """The class index each image's objective chose (the result's metrics say which class was used)."""
    return [details["index"] for details in result.metrics["objective"]]


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


@pytest.mark.parametrize("reduce", ["max", "sum"])
def test_matches_captum_on_shapes_model(shapes_model, shape_pictures, reduce):
    images = [(name, data) for name, data, _, _ in shape_pictures]
    result = run_technique("saliency", shapes_model, images, {"reduce": reduce})
    batch = torch.from_numpy(shapes_model.spec.preprocess([decode_image(d) for _, d in images]))
    targets = torch.tensor(chosen_classes(result))
    captum = CaptumSaliency(shapes_model.module).attribute(batch, target=targets, abs=True).numpy()
    captum_map = captum.max(1) if reduce == "max" else captum.sum(1)
    assert _relative_error(result.arrays["saliency"], captum_map) <= 1e-5
    assert _relative_error(np.abs(result.arrays["attribution"]), captum) <= 1e-5


@pytest.mark.parametrize(
    "name,exporter,opset", [("residual", "dynamo", 20), ("nhwc_keras", "torchscript", 17), ("fixed_batch", "torchscript", 13), ("flatten_all", "dynamo", 18)]
)
def test_matches_captum_on_zoo_models(name, exporter, opset, shape_pictures):
    model = load_model(export(name, exporter, opset))
    images = [(n, d) for n, d, _, _ in shape_pictures[:3]]
    result = run_technique("saliency", model, images, {"target": "1"})

    batch = torch.from_numpy(model.spec.preprocess([decode_image(d) for _, d in images]))
    captum = CaptumSaliency(model.module).attribute(batch, target=1, abs=True).numpy()
    axis = 1 if model.spec.layout == "NCHW" else 3
    assert _relative_error(result.arrays["saliency"], captum.max(axis)) <= 1e-5


def test_target_by_label_and_top1(shapes_model, shape_pictures):
    images = [(name, data) for name, data, _, _ in shape_pictures]
    by_label = run_technique("saliency", shapes_model, images, {"target": "triangle"})
    assert chosen_classes(by_label) == [2, 2, 2, 2] and by_label.metrics["targets"] == ["class triangle"] * 4
    top1 = run_technique("saliency", shapes_model, images)
    assert chosen_classes(top1) == top1.arrays["outputs"].argmax(1).tolist()
    assert top1.provenance["model"]["sha256"] == shapes_model.sha256
    assert top1.provenance["params"].items() >= {"target": "top1", "reduce": "max", "sanity_check": True}.items()


def test_saliency_concentrates_on_the_object(shapes_model, shape_pictures):
    """On the shapes model the gradient mass inside the known object mask beats its area share."""
    images = [(name, data) for name, data, _, _ in shape_pictures]
    result = run_technique("saliency", shapes_model, images)
    for index, (_, _, _, mask) in enumerate(shape_pictures):
        values = result.arrays["saliency"][index]
        assert values[mask].sum() / values.sum() > mask.mean()


def test_bad_targets_are_one_sentence(shapes_model, shape_pictures):
    images = [shape_pictures[0][:2]]
    with pytest.raises(UserError, match="not one of this model's labels"):
        run_technique("saliency", shapes_model, images, {"target": "giraffe"})
    with pytest.raises(UserError, match="out of range"):
        run_technique("saliency", shapes_model, images, {"target": "17"})
    with pytest.raises(UserError, match="unknown parameter"):
        run_technique("saliency", shapes_model, images, {"colour": "red"})
    with pytest.raises(UserError, match="needs at least one image"):
        run_technique("saliency", shapes_model, [])


@pytest.mark.parametrize("technique,passes", [("saliency", 1), ("guided_backprop", 1), ("gradcam", 1), ("guided_gradcam", 2)])
def test_an_attribution_takes_its_targets_from_its_own_forward_pass(shapes_model, shape_pictures, technique, passes):
    """The predicted class comes from the attribution's forward pass: no extra pass just to pick targets."""
    images = [(name, data) for name, data, _, _ in shape_pictures]
    calls = []
    handle = shapes_model.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = run_technique(technique, shapes_model, images, {"sanity_check": False, "faithfulness": False})
    finally:
        handle.remove()
    assert len(calls) == passes + 1  # the one more is the runner's parity check on the run's first image
    batch = torch.from_numpy(shapes_model.spec.preprocess([decode_image(d) for _, d in images]))
    np.testing.assert_array_equal(chosen_classes(result), shapes_model.module(batch).argmax(1).numpy())


def test_caption_and_caveats_follow_smoothgrad(shapes_model, shape_pictures):
    image = [(shape_pictures[0][0], shape_pictures[0][1])]
    plain = run_technique("saliency", shapes_model, image, {"sanity_check": False, "faithfulness": False})
    smooth = run_technique("saliency", shapes_model, image, {"sanity_check": False, "faithfulness": False, "smooth_samples": 4})
    assert any("SmoothGrad (smooth_samples)" in caveat for caveat in plain.caveats)
    assert not any("SmoothGrad (smooth_samples)" in caveat for caveat in smooth.caveats)
    assert "with SmoothGrad" in next(a.caption for a in smooth.artifacts if a.name == "saliency_0.png")
