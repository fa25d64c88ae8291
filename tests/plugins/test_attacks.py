"""Attacks: FGSM and PGD equal captum.robust on the same model and inputs; budgets and ranges always hold."""

import numpy as np
import pytest
import torch
from captum.robust import FGSM, PGD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viz_server.model.images import decode_image
from viz_server.runner import run_technique
from viz_server_plugins.toolkit import attacks


@pytest.fixture(scope="module")
def batch(shapes_model, shape_pictures):
    images = shapes_model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures])
    unit = torch.from_numpy(shapes_model.spec.model_to_unit(images)).clamp(0, 1)
    forward = attacks.unit_forward(shapes_model)
    with torch.no_grad():
        labels = forward(unit).argmax(1)
    return forward, unit, labels


def loss():
    return torch.nn.CrossEntropyLoss(reduction="none")


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_matches_captum(batch, targeted):
    forward, unit, labels = batch
    target = (labels + 1) % 4 if targeted else labels
    reference = FGSM(forward, loss_func=loss(), lower_bound=0.0, upper_bound=1.0).perturb(unit.clone(), 8 / 255, target, targeted=targeted)
    ours = attacks.fgsm(forward, unit, target, 8 / 255, targeted, loss="ce", zero_gradient=attacks.CAPTUM_ZERO_GRADIENT)
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm,radius", [("Linf", 8 / 255), ("L2", 1.0)])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_matches_captum(batch, norm, radius, targeted):
    forward, unit, labels = batch
    target = (labels + 2) % 4 if targeted else labels
    reference = PGD(forward, loss_func=loss(), lower_bound=0.0, upper_bound=1.0).perturb(
        unit.clone(), radius, 2 / 255, 10, target, targeted=targeted, norm=norm
    )
    ours = attacks.pgd(forward, unit, target, radius, 2 / 255, 10, norm, targeted, loss="ce", zero_gradient=attacks.CAPTUM_ZERO_GRADIENT)
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-5, atol=1e-6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    radius=st.floats(0.0, 0.5),
    step=st.floats(0.0, 0.2),
    steps=st.integers(1, 4),
    norm=st.sampled_from(["Linf", "L2"]),
    random_start=st.booleans(),
    rule=st.sampled_from(["sign", "normalized"]),
    seed=st.integers(0, 1000),
)
def test_pgd_never_leaves_the_ball_or_the_range(batch, radius, step, steps, norm, random_start, rule, seed):
    forward, unit, labels = batch
    result = attacks.pgd(
        forward, unit, labels, radius, step, steps, norm, random_start=random_start, generator=torch.Generator().manual_seed(seed), step_rule=rule
    )
    assert result.min() >= 0.0 and result.max() <= 1.0
    difference = (result - unit).flatten(1)
    size = difference.abs().amax(1) if norm == "Linf" else difference.norm(dim=1)
    assert bool((size <= radius + 1e-6).all()), (size.max().item(), radius)


def test_adversarial_technique_flips_predictions(shapes_model, shape_pictures):
    images = [(name, data) for name, data, _, _ in shape_pictures]
    result = run_technique("adversarial", shapes_model, images, {"epsilon": 16 / 255, "steps": 10})
    assert result.metrics["success_rate"] >= 0.75
    assert max(result.metrics["linf"]) <= 16 / 255 + 1e-6
    assert set(result.metrics["broken_by"]) <= {"apgd-ce", "apgd-t", "square", None}
    targeted = run_technique("adversarial", shapes_model, images, {"target": "cross", "epsilon": 32 / 255, "steps": 20})
    assert sum(after == "cross" for after in targeted.metrics["after"]) >= 3


def test_fooling_image_reaches_its_class(shapes_model, shape_pictures):
    result = run_technique("fooling_image", shapes_model, [shape_pictures[0][:2]], {"target": "triangle"})
    assert result.metrics["reached"] == [True] and result.metrics["linf"][0] > 0


def test_robustness_curve_falls_with_epsilon(shapes_model, tmp_path):
    from viz_server.image_sets import read_image_set
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=5, seed=3)
    labeled = read_image_set(tmp_path / "set")
    result = run_technique(
        "robustness_curve",
        shapes_model,
        [(n, d) for n, d, _ in labeled],
        {"epsilons": "0,2/255,8/255,32/255", "steps": 5, "attacks": "fgsm,pgd"},
        labels=[label for _, _, label in labeled],
    )
    for attack in ("fgsm", "pgd"):
        curve = result.metrics["accuracy"][attack]
        assert curve[0] == result.metrics["clean_accuracy"] and curve[-1] < curve[0]
    assert result.metrics["accuracy"]["pgd"][-1] <= result.metrics["accuracy"]["fgsm"][-1]
    assert result.metrics["labels"] == "the image set's labels"
    epsilons = set(result.arrays["epsilons"].tolist())
    for attack in ("fgsm", "pgd"):
        smallest = result.arrays[f"smallest_flip_{attack}"]
        flipped = smallest[~np.isnan(smallest)]
        assert set(flipped.tolist()) <= epsilons - {0.0}
        lowest = min(result.metrics["accuracy"][attack])
        assert len(flipped) >= round(len(smallest) * (result.metrics["clean_accuracy"] - lowest))


def test_corruptions_lower_accuracy_with_severity(shapes_model, tmp_path):
    from viz_server.image_sets import read_image_set
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=4, seed=8)
    labeled = read_image_set(tmp_path / "set")
    result = run_technique(
        "corruptions",
        shapes_model,
        [(n, d) for n, d, _ in labeled],
        {"corruptions": "gaussian_noise,gaussian_blur,jpeg"},
        labels=[label for _, _, label in labeled],
    )
    accuracy = result.metrics["accuracy"]
    assert set(accuracy) == {"gaussian_noise", "gaussian_blur", "jpeg"}
    for values in accuracy.values():
        assert values[-1] <= result.metrics["clean_accuracy"] and all(isinstance(v, float) for v in values)
    assert accuracy["gaussian_noise"][-1] < accuracy["gaussian_noise"][0] or accuracy["gaussian_noise"][0] < result.metrics["clean_accuracy"]
    import json

    json.dumps(result.to_json())


def test_defences_report_recovery_and_cost(shapes_model, tmp_path):
    from viz_server.image_sets import read_image_set
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=4, seed=12)
    labeled = read_image_set(tmp_path / "set")
    result = run_technique(
        "defences",
        shapes_model,
        [(n, d) for n, d, _ in labeled],
        {"epsilon": 8 / 255, "steps": 5, "noise": "0.05", "jpeg_qualities": "50", "median_sizes": "3"},
        labels=[label for _, _, label in labeled],
    )
    defences = result.metrics["defences"]
    assert list(defences) == ["none", "gaussian noise 0.05", "JPEG quality 50", "median 3x3"]
    assert defences["none"]["non_adaptive"] < defences["none"]["clean"]
    for name, figures in defences.items():  # the adaptive attack is never weaker than the non-adaptive one
        assert figures["adaptive"] <= figures["non_adaptive"], name
    assert any(d["non_adaptive"] > d["adaptive"] for d in defences.values()), "BPDA/EOT should beat some defence the non-adaptive attack did not"
    assert any("adaptive figure" in caveat for caveat in result.caveats)
