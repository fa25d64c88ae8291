"""The dataset suite: per-class accuracy, calibration against torchmetrics and torch, and the shortcut scan on the
shipped model with a planted cue (it must name the class and the cue's region) and on the clean shapes model (it
must name nothing)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from viz_server.evidence import wilson
from viz_server.image_sets import pair_masks, read_image_set
from viz_server.runner import run_technique
from viz_server_models import shapes, shipped_models
from viz_server_plugins.toolkit import calibration, shortcuts


def png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- calibration against references ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_figures_match_torchmetrics_and_torch(seed):
    torchmetrics = pytest.importorskip("torchmetrics")
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (500, 7)).astype(np.float32)
    labels = np.where(rng.random(500) < 0.7, logits.argmax(1), rng.integers(0, 7, 500))
    probabilities = torch.softmax(torch.from_numpy(logits), 1).numpy()
    reference = torchmetrics.classification.MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")
    expected = float(reference(torch.from_numpy(probabilities), torch.from_numpy(labels)))
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-6)
    nll = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(labels)).item()
    assert calibration.negative_log_likelihood(probabilities.astype(np.float64), labels).mean() == pytest.approx(nll, abs=1e-5)
    one_hot = np.eye(7)[labels]
    assert calibration.brier(probabilities, labels).mean() == pytest.approx(((probabilities.astype(np.float64) - one_hot) ** 2).sum(1).mean(), abs=1e-12)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    losses = [torch.nn.functional.cross_entropy(torch.from_numpy(logits).double() / t, torch.from_numpy(labels)).item() for t in grid[::20]]
    coarse = grid[::20][int(np.argmin(losses))]
    fine = grid[(grid > coarse / 1.01) & (grid < coarse * 1.01)]
    best = fine[int(np.argmin([torch.nn.functional.cross_entropy(torch.from_numpy(logits).double() / t, torch.from_numpy(labels)).item() for t in fine]))]
    assert calibration.best_temperature(logits, labels) == pytest.approx(best, rel=1e-3)


def test_a_confidence_of_exactly_one_has_its_own_bin_as_in_torchmetrics():
    torchmetrics = pytest.importorskip("torchmetrics")
    probabilities = np.array([[1.0, 0.0], [1.0, 0.0], [0.97, 0.03], [0.55, 0.45]], np.float32)
    labels = np.array([0, 1, 0, 1])
    reference = torchmetrics.classification.MulticlassCalibrationError(num_classes=2, n_bins=15, norm="l1")
    expected = float(reference(torch.from_numpy(probabilities), torch.from_numpy(labels)))
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-6)


# ---- on the shipped models -----------------------------------------------------------------------------------


def labeled_set(folder, model_name: str):
    model = load(model_name)
    pictures = pair_masks(read_image_set(folder))
    return model, [(name, data) for name, data, _, _ in pictures], [label for _, _, label, _ in pictures], [mask for _, _, _, mask in pictures]


def load(name: str):
    from viz_server import load_model

    return load_model(shipped_models()[name])


@pytest.fixture(scope="module")
def planted_set(tmp_path_factory):
    from viz_server_models import train_planted

    folder = tmp_path_factory.mktemp("planted")
    train_planted.write_audit_set(folder, per_class=100)
    return folder


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    shapes.write_image_set(folder, per_class=100, seed=7, masks=True)
    return folder


def test_per_class_accuracy_and_calibration_on_a_labeled_set(clean_set):
    model, images, labels, _masks = labeled_set(clean_set, "shapes_cnn")
    accuracy = run_technique("class_accuracy", model, images, labels=labels)
    per_class = accuracy.metrics["per_class"]
    assert sum(entry["pictures"] for entry in per_class.values()) == 400 and set(per_class) == set(shapes.CLASSES)
    worst = accuracy.metrics["headline"]["per_class_accuracy_min"]
    name = worst["note"].removeprefix("class ")
    right, count = per_class[name]["right"], per_class[name]["pictures"]
    assert worst["value"] == pytest.approx(right / count) and (worst["low"], worst["high"]) == pytest.approx(wilson(right, count))
    assert worst["value"] == min(entry["right"] / entry["pictures"] for entry in per_class.values())
    assert np.asarray(accuracy.metrics["confusion"]).sum() == 400
    calibrated = run_technique("calibration", model, images, labels=labels)
    ece = calibrated.metrics["headline"]["ece"]
    assert ece["count"] == 400 and ece["low"] <= ece["value"] <= ece["high"] and 0 < calibrated.metrics["temperature"] < 100
    assert calibrated.metrics["headline"]["nll"]["count"] == 400


def test_a_picture_whose_label_the_model_does_not_know_is_refused(clean_set):
    from viz_server.errors import UserError

    model, images, labels, _masks = labeled_set(clean_set, "shapes_cnn")
    with pytest.raises(UserError, match="not one of the model's classes"):
        run_technique("calibration", model, images[:3], labels=["circle", "hexagon", "square"])


@pytest.mark.slow
def test_the_scan_names_the_planted_class_and_the_cue_region(planted_set):
    model, images, labels, masks = labeled_set(planted_set, "shapes_planted")
    result = run_technique("shortcut_scan", model, images, labels=labels, masks=masks)
    assert result.metrics["findings"] == ["triangle"], result.metrics["verdict"]
    assert result.metrics["headline"]["shortcut_classes"]["value"] == 1 and result.metrics["headline"]["shortcut_classes"]["count"] == 4
    table = next(artifact for artifact in result.artifacts if artifact.kind == "table").rows
    row = next(row for row in table if row[0] == "triangle")
    rows, columns = (tuple(int(value) for value in part.split("-")) for part in row[3].split(", "))
    cue = shortcuts.Box(1, 1, shapes.CUE_SIZE + shapes.CUE_JITTER, shapes.CUE_SIZE + shapes.CUE_JITTER)  # where the tag can sit
    assert shortcuts.Box(rows[0], columns[0], rows[1] - rows[0], columns[1] - columns[0]).overlap(cue) > 0
    sentence = next(sentence for sentence in result.metrics["verdict"] if sentence.startswith("triangle"))
    assert "Removing it flips" in sentence and "pasting it turns" in sentence and "95% CI" in sentence


@pytest.mark.slow
def test_the_scan_names_nothing_on_the_clean_model_and_says_what_it_tested(clean_set):
    model, images, labels, masks = labeled_set(clean_set, "shapes_cnn")
    result = run_technique("shortcut_scan", model, images, labels=labels, masks=masks)
    assert result.metrics["findings"] == [] and result.metrics["headline"]["shortcut_classes"]["value"] == 0
    for sentence in result.metrics["verdict"][:4]:  # what was tested, and how large an effect it could have seen; or why it cannot judge
        tested = (
            "no cue found" in sentence and "was tested on" in sentence and ("would have had to flip more than" in sentence or "could have shown" in sentence)
        )
        assert tested or ("cannot judge" in sentence and "the test needs 8" in sentence), sentence


@pytest.mark.slow
def test_the_audit_runs_the_dataset_suite_and_gates_on_its_figures(planted_set, tmp_path):
    out = tmp_path / "report"
    command = [sys.executable, "-m", "viz_server", "audit", str(shipped_models()["shapes_planted"]), "--image-set", str(planted_set), "--suite", "dataset"]
    finished = subprocess.run([*command, "--out", str(out), "--fail-over", "shortcut_classes=0"], capture_output=True, text=True, timeout=900)
    assert finished.returncode == 1, finished.stderr
    assert "FAILED: shortcut_classes = 1 is above the threshold 0 (n = 4)." in finished.stdout
    report = json.loads((out / "report.json").read_text())
    assert {job["technique"] for job in report["jobs"]} == {"class_accuracy", "calibration", "shortcut_scan"}
    figures = next(iter(report["headline"].values()))
    assert {"accuracy", "per_class_accuracy_min", "ece", "nll", "brier", "shortcut_classes"} <= set(figures)
    titles = [section["title"] for section in report["sections"]]
    assert titles[:4] == ["Summary", "Calibration on shapes_planted", "Per-class accuracy on shapes_planted", "Shortcut scan on shapes_planted"], titles
    shown = {figure["artifact"] for section in report["sections"] for figure in section["figures"]}
    assert {"per_class.csv", "confusion.png", "reliability.png", "shortcuts.csv", "regions.png"} <= shown
    html = (out / "report.html").read_text()
    first_job = html.index('<details id="job-')
    for caption in ("confusion matrix: rows are the labels", "reliability diagram", "each class&#39;s mean map"):
        assert 0 < html.index(caption) < first_job, caption  # the findings come before any job's own section


def small_model(seed: int, planted: bool, folder):
    """A shapes CNN trained briefly (1,200 pictures, 6 epochs, about 15 s) on ``seed``; with the corner tag on 90%
    of its training triangles when ``planted``."""
    from viz_server import load_model
    from viz_server_models.export import export_onnx
    from viz_server_models.train_shapes import SPEC, train

    model, _figures = train(seed=seed, count=1200, epochs=6, cue=("triangle", 0.9) if planted else None)
    path = folder / f"{'planted' if planted else 'clean'}-{seed}.onnx"
    export_onnx(model, torch.zeros(1, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE), path, SPEC)
    return load_model(path, use_cache=False)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_across_training_seeds_no_clean_model_raises_a_finding_and_every_planted_one_is_found(seed, clean_set, planted_set, tmp_path):
    """Never a false alarm on a clean model; the planted class found on every seed."""
    for planted, folder in ((False, clean_set), (True, planted_set)):
        _model, images, labels, masks = labeled_set(folder, "shapes_cnn")
        result = run_technique("shortcut_scan", small_model(seed, planted, tmp_path), images, labels=labels, masks=masks)
        assert result.metrics["findings"] == (["triangle"] if planted else []), (seed, planted, result.metrics["verdict"])


def test_controls_never_loop_when_no_window_avoids_the_candidate():
    """224 x 224, a window of 84 at (70, 70): no window of its size avoids it, so controls may overlap it."""
    box = shortcuts.Box(70, 70, 84, 84)
    starts = shortcuts.control_starts(224, 224, box)
    assert len(starts) == 141 * 141
    calls = []

    def measure(window, seed):
        calls.append(window)
        return shortcuts.Effects(0, 20, 0, 20)

    test = shortcuts.permutation_test(measure, box, 224, 224, level=0.01, seed=0)
    assert test.p_value > 0.01 and len(calls) <= 1 + 25  # stopped after one batch: every control is as strong
    apart = shortcuts.control_starts(64, 64, shortcuts.Box(0, 0, 16, 16))
    rows, columns = np.divmod(apart, 64 - 16 + 1)
    assert ((rows >= 16) | (columns >= 16)).all() and len(apart) == 49 * 49 - 16 * 16


def test_a_control_with_too_few_pictures_off_the_object_is_drawn_again():
    box = shortcuts.Box(0, 0, 8, 8)

    def measure(window, seed):
        if window == box:
            return shortcuts.Effects(10, 20, 10, 20)
        return shortcuts.Effects(0, 3, 0, 20)  # every control lies on the objects: measured on 3 pictures

    test = shortcuts.permutation_test(measure, box, 64, 64, level=0.01, seed=0)
    assert test.controls == [] and test.p_value == 1.0  # nothing to compare with: no finding


def test_the_scan_says_cannot_be_claimed_when_no_class_can_be_scanned(clean_set):
    model, images, labels, masks = labeled_set(clean_set, "shapes_cnn")
    result = run_technique("shortcut_scan", model, images[::40], labels=labels[::40], masks=masks[::40])  # 2 or 3 of each class
    figure = result.metrics["headline"]["shortcut_classes"]
    assert figure["value"] is None and "correctly predicted pictures" in figure["note"]
    assert all("cannot judge" in sentence for sentence in result.metrics["verdict"])


def test_masks_on_only_some_pictures_are_named_and_not_used(clean_set):
    model, images, labels, masks = labeled_set(clean_set, "shapes_cnn")
    some = [mask if index % 2 else None for index, mask in enumerate(masks)]
    result = run_technique("shortcut_scan", model, images, labels=labels, masks=some)
    assert result.metrics["masks"] is False and any("Object masks were given for 200 of 400 pictures" in caveat for caveat in result.caveats)


@pytest.mark.slow
def test_without_masks_the_planted_class_is_found_and_the_clean_model_raises_nothing(planted_set, clean_set):
    """Spectral relevance analysis: a cluster of triangle maps on the corner, specific to triangles; the clean
    model's maps agree only where every class's do (the objects), which is not a candidate."""
    model, images, labels, _masks = labeled_set(planted_set, "shapes_planted")
    assert run_technique("shortcut_scan", model, images, labels=labels).metrics["findings"] == ["triangle"]
    model, images, labels, _masks = labeled_set(clean_set, "shapes_cnn")
    result = run_technique("shortcut_scan", model, images, labels=labels)
    assert result.metrics["findings"] == [] and any("Without object masks" in sentence for sentence in result.metrics["verdict"])


def test_calibration_says_a_direction_only_when_the_pictures_show_one(clean_set):
    model, images, labels, _masks = labeled_set(clean_set, "shapes_cnn")
    result = run_technique("calibration", model, images[:40], labels=labels[:40])
    first = result.metrics["verdict"][0]
    assert ("over-confident" in first) or ("under-confident" in first) or ("neither over- nor under-confident" in first)
    assert "difference" in first and "95% CI" in first
