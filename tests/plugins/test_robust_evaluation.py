"""Attacks that cannot fail silently: logit losses, APGD, Square, the ensemble, and the gradient-masking checks,
on a confident model, random-weight torchvision networks and a model whose input quantizer masks gradients."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from viz_server import load_model
from viz_server.model.images import decode_image
from viz_server.runner import run_technique
from viz_server_models import shipped_models
from viz_server_plugins.toolkit import attack_losses, attacks
from viz_server_plugins.toolkit.apgd import apgd, checkpoints
from viz_server_plugins.toolkit.optimization import to_model_space
from viz_server_plugins.toolkit.square import square_attack

EPSILON = 8 / 255


def margin_pgd_50(model, unit: torch.Tensor, labels: torch.Tensor, epsilon: float = EPSILON) -> np.ndarray:
    """The reference the issue names, written here independently: 50 signed steps of 2/255 on the logit margin,
    L-inf projection, no random start. Returns which images it breaks (on onnxruntime)."""
    x = unit.clone()
    for _ in range(50):
        x.requires_grad_(True)
        logits = model.module(to_model_space(model.spec, x))
        true = logits.gather(1, labels[:, None])[:, 0]
        other = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
        (gradient,) = torch.autograd.grad((other - true).sum(), x)
        with torch.no_grad():
            x = (unit + (x + 2 / 255 * gradient.sign() - unit).clamp(-epsilon, epsilon)).clamp(0, 1)
    return (attacks.predicted_classes(model, x) != labels).numpy()


def with_onnx_nodes(data: bytes, *, output_scale: float | None = None, quantize_input: bool = False) -> bytes:
    """A copy of an ONNX model with its scores multiplied by ``output_scale`` (a confident model) and/or its input
    rounded to 8 bits first (a non-differentiable quantizer: gradients through it are exactly zero)."""
    model = onnx.load_from_string(data)
    graph = model.graph
    if output_scale is not None:
        output = graph.output[0]
        graph.initializer.append(numpy_helper.from_array(np.array(output_scale, np.float32), "scale__"))
        graph.node.append(helper.make_node("Mul", [output.name + "__raw", "scale__"], [output.name], name="scale_scores"))
        for node in graph.node[:-1]:
            node.output[:] = [output.name + "__raw" if name == output.name else name for name in node.output]
    if quantize_input:
        name = graph.input[0].name
        graph.initializer.extend([numpy_helper.from_array(np.array(255, np.float32), "levels__")])
        quantizer = [
            helper.make_node("Mul", [name, "levels__"], [name + "__scaled"], name="quantize_scale"),
            helper.make_node("Round", [name + "__scaled"], [name + "__rounded"], name="quantize_round"),
            helper.make_node("Div", [name + "__rounded", "levels__"], [name + "__quantized"], name="quantize_back"),
        ]
        for node in graph.node:
            node.input[:] = [name + "__quantized" if value == name else value for value in node.input]
        nodes = quantizer + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def pictures(shape_pictures):
    return [(name, data) for name, data, _, _ in shape_pictures]


@pytest.fixture(scope="module")
def confident_model():
    return load_model(with_onnx_nodes(shipped_models()["shapes_cnn"].read_bytes(), output_scale=100.0), use_cache=False)


def unit_batch(model, pictures):
    images = model.spec.preprocess([decode_image(data) for _, data in pictures])
    return torch.from_numpy(model.spec.model_to_unit(images)).clamp(0, 1)


# ---- losses ---------------------------------------------------------------------------------------------------


def test_dlr_is_invariant_to_the_logits_scale_and_the_margin_does_not_saturate():
    logits = torch.tensor([[4.0, 1.0, 0.5, -2.0], [0.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(attack_losses.dlr(logits * 100, labels), attack_losses.dlr(logits, labels))
    torch.testing.assert_close(attack_losses.dlr(logits * 7 + 3, labels, torch.tensor([2, 3])), attack_losses.dlr(logits, labels, torch.tensor([2, 3])))
    confident = logits * 100
    confident.requires_grad_(True)
    (margin_gradient,) = torch.autograd.grad(attack_losses.margin(confident, labels).sum(), confident)
    assert margin_gradient.abs().sum() > 0
    (ce_gradient,) = torch.autograd.grad(attack_losses.cross_entropy(confident, labels).sum(), confident)
    assert ce_gradient.abs().max() < 1e-30 or ce_gradient.abs().max() < margin_gradient.abs().max() * 1e-20  # CE underflows
    assert attack_losses.dlr(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item() == attack_losses.margin(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item()


def test_apgd_checkpoints_follow_the_paper():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


# ---- the defaults reach what a 50-step margin PGD reaches ------------------------------------------------------------


def test_on_a_confident_model_the_defaults_match_margin_pgd(confident_model, pictures):
    unit = unit_batch(confident_model, pictures)
    labels = attacks.predicted_classes(confident_model, unit)
    reference = margin_pgd_50(confident_model, unit, labels)
    result = run_technique("adversarial", confident_model, pictures)
    assert result.metrics["success_rate"] >= reference.mean() and result.metrics["success_rate"] > 0.5, (result.metrics, reference)
    assert result.metrics["zero_gradient_share"] == 0.0
    # the old default: cross-entropy with captum's absolute gradient floor, stalls on the same model
    forward = attacks.unit_forward(confident_model)
    stalled = attacks.pgd(forward, unit, labels, EPSILON, 2 / 255, 10, loss="ce", zero_gradient=attacks.CAPTUM_ZERO_GRADIENT)
    assert (attacks.predicted_classes(confident_model, stalled) != labels).float().mean() < result.metrics["success_rate"]


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def random_torchvision(request):
    import torchvision

    torch.manual_seed(0)
    native = torchvision.models.get_model(request.param, weights=None, num_classes=10).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            native,
            (torch.rand(1, 3, 64, 64),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return load_model(buffer.getvalue(), use_cache=False)


def test_on_random_weight_torchvision_networks_the_defaults_match_margin_pgd(random_torchvision):
    rng = np.random.default_rng(0)
    pictures = []
    for index in range(4):
        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
        pictures.append((f"random{index}.png", buffer.getvalue()))
    unit = unit_batch(random_torchvision, pictures)
    labels = attacks.predicted_classes(random_torchvision, unit)
    reference = margin_pgd_50(random_torchvision, unit, labels)
    result = run_technique("adversarial", random_torchvision, pictures, {"queries": 100})
    assert result.metrics["success_rate"] >= reference.mean(), (result.metrics["success_rate"], reference)


# ---- the robustness curve reaches ~100 % at a large epsilon, and checks itself --------------------------------------------


def labeled_set(tmp_path, per_class=3, seed=4):
    from viz_server.image_sets import read_image_set
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=per_class, seed=seed)
    labeled = read_image_set(tmp_path / "set")
    return [(n, d) for n, d, _ in labeled], [label for _, _, label in labeled]


def test_the_robustness_curve_reaches_all_images_and_finds_no_masking_on_a_plain_model(shapes_model, tmp_path):
    images, labels = labeled_set(tmp_path)
    result = run_technique("robustness_curve", shapes_model, images, {"epsilons": "0,4/255,16/255,64/255", "steps": 20}, labels=labels)
    success = result.metrics["success_rate"]["ensemble"]
    assert success[0] == 0 and success[-1] >= 0.95 and success == sorted(success)
    assert result.metrics["masking_free"] == {"ensemble": True} and result.metrics["masking_findings"]["ensemble"] == []
    assert "No sign of gradient masking" in result.caveats[0] and "robust" not in result.caveats[0].replace("robustness", "")
    headline = result.metrics["headline"]
    assert headline["accuracy"]["value"] == result.metrics["clean_accuracy"]
    assert headline["robust_accuracy"]["value"] == result.metrics["accuracy"]["ensemble"][-1] and "epsilon 0.2510" in headline["robust_accuracy"]["label"]


@pytest.fixture(scope="module")
def quantized_model():
    """The shipped shapes CNN behind an 8-bit input quantizer (Round): the gradient to the input is exactly zero."""
    return load_model(with_onnx_nodes(shipped_models()["shapes_cnn"].read_bytes(), quantize_input=True), use_cache=False)


def test_a_non_differentiable_input_quantizer_triggers_the_masking_checks(quantized_model, pictures, tmp_path):
    assert quantized_model.conversion.gradient_norm == 0 or not quantized_model.conversion.gradient_norm > 0
    result = run_technique("adversarial", quantized_model, pictures)
    findings = " ".join(result.metrics["masking_findings"])
    assert result.metrics["zero_gradient_share"] > 0.9 and "exactly zero gradient" in findings
    assert "Robustness cannot be claimed" in result.caveats[0]
    images, labels = labeled_set(tmp_path, per_class=2, seed=9)
    curve = run_technique("robustness_curve", quantized_model, images, {"epsilons": "0,8/255", "attacks": "pgd", "steps": 5}, labels=labels)
    found = " ".join(curve.metrics["masking_findings"]["pgd"])
    assert "exactly zero gradient" in found and "very large epsilon" in found
    assert curve.metrics["masking_free"] == {"pgd": False} and curve.caveats[0].startswith("pgd: Robustness cannot be claimed")
    withheld = curve.metrics["headline"]["robust_accuracy"]  # an audit gate on it fails rather than passing on a masked figure
    assert withheld["value"] is None and withheld["note"].startswith("cannot be claimed")


def test_square_breaks_what_gradients_cannot_see(quantized_model, pictures):
    unit = unit_batch(quantized_model, pictures)
    labels = attacks.predicted_classes(quantized_model, unit)
    spec = quantized_model.spec
    images, success, used = square_attack(
        lambda batch: quantized_model.predict(spec.unit_to_model(batch)), unit.numpy(), labels.numpy(), 16 / 255, 200, np.random.default_rng(0)
    )
    assert success.any() and used <= 201
    assert np.abs(images - unit.numpy()).max() <= 16 / 255 + 1e-6 and images.min() >= 0 and images.max() <= 1


# ---- APGD stays in the ball, and is at least as strong as PGD --------------------------------------------------------------


def test_apgd_is_at_least_as_strong_as_pgd(shapes_model, pictures):
    unit = unit_batch(shapes_model, pictures)
    labels = attacks.predicted_classes(shapes_model, unit)
    forward = attacks.unit_forward(shapes_model)
    for epsilon in (2 / 255, 4 / 255):
        pgd_broken = (attacks.predicted_classes(shapes_model, attacks.pgd(forward, unit, labels, epsilon, epsilon / 4, 20)) != labels).sum()
        run = apgd(forward, unit, labels, epsilon, "Linf", "margin", steps=20, generator=torch.Generator().manual_seed(0))
        assert int(run.success.sum()) >= int(pgd_broken)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epsilon=st.floats(0.001, 0.3), norm=st.sampled_from(["Linf", "L2"]), loss=st.sampled_from(["ce", "margin", "dlr"]), seed=st.integers(0, 100))
def test_apgd_never_leaves_the_ball_or_the_range(shapes_model, shape_pictures, epsilon, norm, loss, seed):
    unit = unit_batch(shapes_model, [(name, data) for name, data, _, _ in shape_pictures[:2]])
    labels = attacks.predicted_classes(shapes_model, unit)
    run = apgd(attacks.unit_forward(shapes_model), unit, labels, epsilon, norm, loss, steps=5, generator=torch.Generator().manual_seed(seed))
    difference = (run.adversarial - unit).flatten(1)
    size = difference.abs().amax(1) if norm == "Linf" else difference.norm(dim=1)
    assert bool((size <= epsilon + 1e-6).all()) and run.adversarial.min() >= 0 and run.adversarial.max() <= 1
