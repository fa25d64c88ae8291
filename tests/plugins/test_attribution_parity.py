"""Every gradient technique equals Captum's implementation on the same converted module (Captum's style:
one table of cases run across all methods)."""

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, NeuronGradient, NeuronGuidedBackprop, Saliency
from model_zoo import export

from viz_server import load_model
from viz_server.model.images import decode_image
from viz_server.testing import objective_for
from viz_server_plugins.deconvnet import Deconvnet
from viz_server_plugins.gradcam import GradCAM
from viz_server_plugins.guided_backprop import GuidedBackprop as OurGuidedBackprop
from viz_server_plugins.guided_gradcam import GuidedGradCAM
from viz_server_plugins.saliency import Saliency as OurSaliency
from viz_server_plugins.toolkit.cam import class_activation_map
from viz_server_plugins.toolkit.gradients import neuron_gradient

PLAIN = {"smooth_samples": 0, "reduce": "max"}


def relative_error(ours, reference) -> float:
    ours, reference = (np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, np.float64) for x in (ours, reference))
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


@pytest.fixture(
    scope="module", params=["shapes_cnn", "residual-dynamo20", "pad_resize_split-dynamo18", "hand_hard_swish-torchscript13", "hand_hard_swish-dynamo18"]
)
def case(request, shape_pictures):
    """(model, images, targets) for the shipped shapes CNN and zoo networks whose rectifiers are nn.ReLU: the
    MobileNetV3-style one also holds hard-swish and hard-sigmoid written out with Clip(0, 6), which the guided
    rules must leave alone, as Captum does."""
    if request.param == "shapes_cnn":
        from viz_server_models import shipped_models

        model = load_model(shipped_models()["shapes_cnn"])
    else:
        name, exporter = request.param.split("-")
        model = load_model(export(name, exporter[:-2], int(exporter[-2:])))
        assert not model.spec.task or model.spec.task == "classification"
    images = torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures]))
    with torch.no_grad():
        targets = model.module(images).argmax(1)
    return model, images, targets


@pytest.mark.parametrize(
    "ours,captum",
    [(OurSaliency, lambda m: Saliency(m)), (OurGuidedBackprop, lambda m: GuidedBackprop(m)), (Deconvnet, lambda m: Deconvolution(m))],
    ids=["saliency", "guided_backprop", "deconvnet"],
)
def test_gradient_methods_match_captum(case, ours, captum):
    model, images, targets = case
    reference = captum(model.module).attribute(images.clone(), target=targets)
    mine = ours().attribute(model, images, objective_for(model, classes=targets), PLAIN)
    if ours is OurSaliency:
        reference = reference.abs()
        mine = mine.abs()
    assert relative_error(mine, reference) <= 1e-5


@pytest.mark.parametrize("weighting", ["gradcam"])
def test_gradcam_matches_captum_layer_gradcam(case, weighting):
    model, images, targets = case
    layer = model.layers.default_cam_layer
    reference = LayerGradCam(model.module, model.submodule(layer)).attribute(images.clone(), target=targets, relu_attributions=True)
    mine = class_activation_map(model, images, objective_for(model, classes=targets), layer, weighting)
    assert relative_error(mine, reference[:, 0]) <= 1e-5
    upsampled = LayerAttribution.interpolate(reference, (model.spec.height, model.spec.width), interpolate_mode="bilinear")
    full = GradCAM().attribute(model, images, objective_for(model, classes=targets), {"layer": "", "weighting": "gradcam", "upsample": "bilinear"})
    assert relative_error(full, upsampled[:, 0]) <= 1e-5


def test_guided_gradcam_matches_captum(case):
    model, images, targets = case
    layer = model.layers.default_cam_layer
    reference = GuidedGradCam(model.module, model.submodule(layer)).attribute(images.clone(), target=targets, interpolate_mode="nearest")
    mine = GuidedGradCAM().attribute(model, images, objective_for(model, classes=targets), {"layer": layer, "upsample": "nearest", **PLAIN})
    assert relative_error(mine, reference) <= 1e-5


@pytest.mark.parametrize("guided,captum", [(False, NeuronGradient), (True, NeuronGuidedBackprop)], ids=["plain", "guided"])
def test_neuron_gradient_matches_captum(case, guided, captum):
    model, images, targets = case
    layer = model.layers.default_cam_layer
    reference = captum(model.module, model.submodule(layer)).attribute(images.clone(), neuron_selector=(1, 2, 3))
    mine, _ = neuron_gradient(model, images, layer, 1, (2, 3), guided=guided)
    assert relative_error(mine, reference) <= 1e-5


def test_gradcam_plus_plus_follows_its_formula(case):
    """Grad-CAM++ weights from the closed form of Chattopadhay et al. (eq. 19), computed independently."""
    from viz_server_plugins.toolkit.cam import activations_and_gradients

    model, images, targets = case
    layer = model.layers.default_cam_layer
    activations, gradients = activations_and_gradients(model, images, objective_for(model, classes=targets), layer)
    a, g = activations.double(), gradients.double()
    denominator = 2 * g**2 + a.sum((2, 3), keepdim=True) * g**3
    alpha = g**2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * g.clamp(min=0)).sum((2, 3))
    expected = (weights[:, :, None, None] * a).sum(1).clamp(min=0)
    assert relative_error(class_activation_map(model, images, objective_for(model, classes=targets), layer, "gradcam++"), expected) <= 1e-5


def test_the_guided_rule_skips_clips_inside_hard_activations_unless_asked(shape_pictures):
    """ReLU6 is a rectifier; the Clip(0, 6) of a hand-written hard-swish is not (Captum leaves it alone too)."""
    from viz_server_plugins.toolkit.relu_rules import rule_caveat

    model = load_model(export("hand_hard_swish", "torchscript", 13))
    kinds = [(layer.op, layer.kind) for layer in model.layers if layer.op in ("Relu", "Clip")]
    assert kinds == [("Relu", "relu"), ("Clip", "activation"), ("Relu", "relu"), ("Clip", "activation"), ("Relu", "relu")]
    relu6 = load_model(export("depthwise", "torchscript", 13))
    assert [layer.kind for layer in relu6.layers if layer.op == "Clip"] == ["relu", "relu"]
    assert rule_caveat(model, "guided") == (
        "The guided rule was applied at 3 rectifiers (3 Relu); these units passed the ordinary gradient: 2 Clip in a hard activation (rule_units chooses)."
    )
    images = torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures]))
    targets = model.module(images).argmax(1)
    reference = GuidedBackprop(model.module).attribute(images.clone(), target=targets)
    opted_in = OurGuidedBackprop().attribute(model, images, objective_for(model, classes=targets), {**PLAIN, "rule_units": "rectifiers_and_clips"})
    assert relative_error(opted_in, reference) > 1e-2
