"""The trust checks every attribution carries: sanity check, faithfulness curves, localization, SmoothGrad."""

import contextlib
import io

import numpy as np
import pytest
import torch
from torch import nn

from viz_server import load_model
from viz_server.testing import objective_for
from viz_server_models import shapes
from viz_server_plugins.gradcam import GradCAM
from viz_server_plugins.guided_backprop import GuidedBackprop
from viz_server_plugins.saliency import Saliency
from viz_server_plugins.toolkit import faithfulness, localization, sanity


def defaults(technique) -> dict:
    return {param.name: param.default for param in technique.params}


@pytest.fixture(scope="module")
def deep_relu_net():
    """A randomly initialised VGG-style ReLU network: guided backprop on it is known to show the input only."""
    torch.manual_seed(0)
    layers, channels = [], 3
    for index, width in enumerate([16, 16, 32, 32, 64, 64]):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if index % 2 else [])
        channels = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)).eval()
    buffer = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            net, (torch.rand(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}}
        )
    model = load_model(buffer.getvalue(), mean="0.5", std="0.25")
    picture, _ = shapes.make_image("circle", "circle", np.random.default_rng(0), 32)
    image = torch.from_numpy(model.spec.unit_to_model(picture[None].astype(np.float32) / 255))
    return model, image


def test_sanity_verdict_flips_between_gradient_and_guided_backprop(deep_relu_net):
    model, image = deep_relu_net
    target = objective_for(model, classes=[0])
    verdicts = {}
    for technique in (Saliency(), GuidedBackprop()):
        params = defaults(technique)
        original = technique.maps(model, image, target, params)
        check = sanity.cascading_randomization(technique, model, image, target, params, original, 0, lambda: None)
        assert len(check.correlations) == 4 and check.maps.shape == (5, 32, 32)
        verdicts[technique.name] = check
    assert verdicts["saliency"].passed and "passed" in verdicts["saliency"].verdict
    assert not verdicts["guided_backprop"].passed and "barely changes" in verdicts["guided_backprop"].verdict
    assert verdicts["guided_backprop"].correlations[2] > verdicts["saliency"].correlations[2] + 0.3


def test_methods_checked_on_one_image_meet_the_same_randomized_models(deep_relu_net, monkeypatch):
    """A shared cascade finds the reaching layers and draws the weights once; every check comes out as if alone."""
    model, image = deep_relu_net
    target = objective_for(model, classes=[0])
    alone = {}
    for technique in (Saliency(), GuidedBackprop()):
        original = technique.maps(model, image, target, defaults(technique))
        alone[technique.name] = sanity.cascading_randomization(technique, model, image, target, defaults(technique), original, 0, lambda: None)
    searches = []
    real_reaching_layers = sanity.reaching_layers
    monkeypatch.setattr(sanity, "reaching_layers", lambda *args: searches.append(1) or real_reaching_layers(*args))
    cascade = sanity.RandomizedCascade(0)
    for technique in (Saliency(), GuidedBackprop(), Saliency()):
        original = technique.maps(model, image, target, defaults(technique))
        shared = sanity.cascading_randomization(technique, model, image, target, defaults(technique), original, 0, lambda: None, cascade=cascade)
        assert shared.correlations == alone[technique.name].correlations and shared.passed == alone[technique.name].passed
        np.testing.assert_array_equal(shared.maps, alone[technique.name].maps)
    assert len(searches) == 1 and len(cascade.draws) == len(cascade.layers)

    partial_first = sanity.RandomizedCascade(0)  # the top layers drawn for one check, the rest later for another
    technique = Saliency()
    original = technique.maps(model, image, target, defaults(technique))
    top = sanity.cascading_randomization(
        technique, model, image, target, defaults(technique), original, 0, lambda: None, every_layer=False, cascade=partial_first
    )
    assert top.correlations == alone["saliency"].correlations[:-1]
    full = sanity.cascading_randomization(technique, model, image, target, defaults(technique), original, 0, lambda: None, cascade=partial_first)
    assert full.correlations == alone["saliency"].correlations


def test_batched_verdicts_are_the_step_by_step_cascade_s(deep_relu_net, shapes_model, shape_pictures):
    """``cascade_passes`` re-draws the top layers together and maps every checked picture in one batch: the verdict
    and the correlation behind it are those of the step-by-step cascade run on each picture alone."""
    from viz_server.model.images import decode_image

    images = torch.from_numpy(shapes_model.spec.preprocess([decode_image(data) for _name, data, _label, _mask in shape_pictures[:3]]))
    objective = objective_for(shapes_model, classes=[0, 1, 2])
    outcomes = set()
    for model, batch, target in (
        (shapes_model, images, objective),
        (deep_relu_net[0], deep_relu_net[1].repeat(2, 1, 1, 1), objective_for(deep_relu_net[0], classes=[0, 3])),
    ):
        for technique in (Saliency(), GuidedBackprop()):
            params = {**defaults(technique), "sanity_layers": 2}
            originals = technique.maps(model, batch, target, params)
            alone = [
                sanity.cascading_randomization(
                    technique, model, batch[i : i + 1], target.take([i]), params, originals[i : i + 1], 0, lambda: None, every_layer=False
                ).passed
                for i in range(len(batch))
            ]
            cascades = [sanity.RandomizedCascade(0) for _ in range(len(batch))]
            batched = sanity.cascade_passes(technique, model, batch, target, params, originals, cascades, 0, lambda: None)
            assert batched == alone, technique.name
            outcomes |= set(batched)
    assert outcomes == {True, False}  # both verdicts occur: the comparison can fail


def test_randomization_leaves_the_model_untouched(shapes_model, shape_pictures):
    from viz_server.model.images import decode_image

    image = torch.from_numpy(shapes_model.spec.preprocess([decode_image(shape_pictures[0][1])]))
    before = shapes_model.module(image).detach().clone()
    technique = Saliency()
    params = defaults(technique)
    objective = objective_for(shapes_model, classes=[0])
    original = technique.maps(shapes_model, image, objective, params)
    sanity.cascading_randomization(technique, shapes_model, image, objective, params, original, 0, lambda: None)
    torch.testing.assert_close(shapes_model.module(image), before)


def test_gradcam_is_more_faithful_than_a_random_map(shapes_model, shape_pictures):
    from viz_server.model.images import decode_image

    images = torch.from_numpy(shapes_model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures]))
    targets = shapes_model.module(images).argmax(1)
    objective = objective_for(shapes_model, classes=targets)
    cam = GradCAM().maps(shapes_model, images, objective, defaults(GradCAM()))
    random_maps = np.random.default_rng(0).random(cam.shape)
    good = faithfulness.deletion_insertion(shapes_model, images, objective, cam, 16)
    bad = faithfulness.deletion_insertion(shapes_model, images, objective, random_maps, 16)
    assert good.deletion.shape == (4, 17) and np.allclose(good.deletion[:, 0], good.insertion[:, -1], atol=1e-5)
    assert np.mean(good.metrics()["deletion_auc"]) < np.mean(bad.metrics()["deletion_auc"])
    assert np.mean(good.metrics()["insertion_auc"]) > np.mean(bad.metrics()["insertion_auc"])
    assert good.plot()[:4] == b"\x89PNG"


def test_localization_from_a_blob():
    ys, xs = np.mgrid[0:64, 0:64]
    blob = np.exp(-((ys - 20) ** 2 + (xs - 40) ** 2) / (2 * 5.0**2))
    mask = localization.mask_from_map(blob + 0.01 * np.random.default_rng(0).random(blob.shape))
    top, left, bottom, right = localization.bounding_box(mask)
    assert top < 20 < bottom and left < 40 < right and bottom - top < 20
    truth = (ys - 20) ** 2 + (xs - 40) ** 2 < 100
    assert localization.pointing_game(blob, truth) and localization.energy_in_mask(blob, truth) > 0.8
    assert localization.bounding_box(np.zeros((4, 4), bool)) is None


def test_smoothgrad_is_seeded_and_reduces_to_the_plain_map(shapes_model, shape_pictures):
    from viz_server.model.images import decode_image

    images = torch.from_numpy(shapes_model.spec.preprocess([decode_image(shape_pictures[1][1])]))
    target = objective_for(shapes_model, classes=[1])
    technique = Saliency()
    plain = technique.maps(shapes_model, images, target, defaults(technique))
    noiseless = technique.maps(shapes_model, images, target, {**defaults(technique), "smooth_samples": 3, "smooth_noise": 0.0})
    np.testing.assert_allclose(noiseless, plain, rtol=1e-5, atol=1e-7)
    smooth = {**defaults(technique), "smooth_samples": 6, "smooth_batch": 4}
    first, again = technique.maps(shapes_model, images, target, smooth, seed=5), technique.maps(shapes_model, images, target, smooth, seed=5)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, plain)


def test_grabcut_refines_a_coarse_mask_towards_the_object():
    rng = np.random.default_rng(1)
    picture, truth = shapes.make_image("square", "square", rng)
    coarse = np.zeros_like(truth)
    top, left, bottom, right = localization.bounding_box(truth)
    coarse[max(0, top - 6) : bottom + 7, max(0, left - 6) : right + 7] = True  # a loose blob around the object
    refined = localization.refine_with_grabcut(picture, coarse)

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert iou(refined, truth) > iou(coarse, truth) and iou(refined, truth) > 0.7
