"""The method ranking: its metrics checked against known truth and against Quantus, and its verdict.

Known truth: a model wired to read one patch only (the perfect map is that patch) and the shipped shapes model
with its object masks. A metric that cannot rank the perfect map above a random one must not rank methods.
"""

import contextlib
import io

import numpy as np
import pytest
import torch
from pictures import shapes_with_masks
from torch import nn

from viz_server import load_model
from viz_server.presentation import report_sections
from viz_server.runner import run_technique
from viz_server.testing import objective_for
from viz_server_plugins.saliency import Saliency
from viz_server_plugins.toolkit import localization, ranking, road, stability
from viz_server_plugins.toolkit.baselines import baseline_maps

quantus = pytest.importorskip("quantus", reason="Quantus parity needs quantus (README command 2 installs it)")

SIZE = 48
PATCH = (slice(8, 24), slice(26, 42))


def export(net: nn.Module, channels: int, size: int) -> bytes:
    buffer = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            net.eval(),
            (torch.rand(1, channels, size, size),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b"}},
        )
    return buffer.getvalue()


class PatchReader(nn.Module):
    """Class 0 when the patch ``PATCH`` is bright, class 1 otherwise; no other pixel reaches the output."""

    def __init__(self):
        super().__init__()
        self.smooth = nn.Conv2d(3, 4, 3, padding=1)
        window = torch.zeros(1, 1, SIZE, SIZE)
        window[..., PATCH[0], PATCH[1]] = 1.0
        self.register_buffer("window", window)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.smooth.weight.fill_(1 / 27)
            self.smooth.bias.zero_()
            self.head.weight.copy_(torch.tensor([[10.0] * 4, [-10.0] * 4]))
            self.head.bias.copy_(torch.tensor([-22.0, 22.0]))

    def forward(self, x):
        features = torch.relu(self.smooth(x * self.window))  # the window is a constant, not a weight
        return self.head(features.sum((2, 3)) / (16 * 16))


def patch_pictures(count: int, seed: int = 0) -> np.ndarray:
    """Dark noisy backgrounds with a bright noisy patch at ``PATCH`` (N x H x W x 3 in [0, 1])."""
    rng = np.random.default_rng(seed)
    pictures = rng.uniform(0.0, 0.5, (count, SIZE, SIZE, 3))
    pictures[:, PATCH[0], PATCH[1]] = rng.uniform(0.75, 1.0, (count, 16, 16, 3))
    return pictures.astype(np.float32)


@pytest.fixture(scope="module")
def patch_case():
    model = load_model(export(PatchReader(), 3, SIZE), mean="0", std="1", labels="bright,dark")
    pictures = patch_pictures(12)
    images = torch.from_numpy(model.spec.unit_to_model(pictures))
    objective = objective_for(model, classes=torch.zeros(len(images), dtype=torch.long))
    perfect = np.zeros((len(images), SIZE, SIZE), np.float32)
    perfect[:, PATCH[0], PATCH[1]] = 1.0
    return model, images, objective, pictures, perfect


def scored(model, images, objective, maps, masks, role=ranking.METHOD, label="map"):
    curves = road.road(model, images, objective, maps, fractions=np.linspace(0.1, 0.9, 5))
    empty = np.zeros(len(images))
    scores = ranking.Scores(label, role, curves.gap, curves.morf, curves.lerf, empty, empty, np.ones(len(images), bool))
    scores.energy_ratio = np.array([localization.energy_in_mask(values, mask) / mask.mean() for values, mask in zip(maps, masks)])
    return scores


def test_on_a_model_that_reads_one_patch_the_metrics_rank_the_known_order(patch_case):
    model, images, objective, pictures, perfect = patch_case
    masks = perfect.astype(bool)
    saliency = Saliency().maps(model, images, objective, {"smooth_samples": 0, "reduce": "max"})
    perfect_scores = scored(model, images, objective, perfect, masks, ranking.REFERENCE)
    random_scores = scored(model, images, objective, baseline_maps("random", pictures), masks, ranking.BASELINE, "random")
    edge_scores = scored(model, images, objective, baseline_maps("edges", pictures), masks, ranking.BASELINE, "edges")
    saliency_scores = scored(model, images, objective, saliency, masks)
    assert perfect_scores.gap()[0] > 0.8 and abs(random_scores.gap()[0]) < 0.1
    for metric in ("gap", "localization"):
        assert ranking.leads(perfect_scores, random_scores, metric) and ranking.leads(perfect_scores, edge_scores, metric), metric
        assert ranking.leads(saliency_scores, random_scores, metric) and ranking.leads(saliency_scores, edge_scores, metric), metric
        perfect_value, saliency_value = (getattr(item, metric)() for item in (perfect_scores, saliency_scores))
        assert saliency_value[0] >= 0.85 * perfect_value[0], metric  # the gradient is confined to the patch (and its 1-pixel rim)
    assert ranking.metric_checks([perfect_scores, random_scores]) == {"road": True, "localization": True}


def test_a_metric_that_cannot_tell_the_mask_from_random_ranks_nothing(patch_case):
    """On a model whose output ignores the input, every map scores alike: the verdict must say so, not pick one."""
    model, images, objective, pictures, perfect = patch_case
    blind = load_model(export(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * SIZE * SIZE, 2)), 3, SIZE), mean="0", std="1")
    with torch.no_grad():
        blind.module.apply(lambda layer: layer.weight.zero_() if isinstance(layer, nn.Linear) else None)
    blind.predict = lambda batch: np.tile(np.array([[2.0, 0.0]], np.float32), (len(batch), 1))  # the same answer for any input
    masks = perfect.astype(bool)
    blind_objective = objective_for(blind, classes=torch.zeros(len(images), dtype=torch.long))
    method = scored(blind, images, blind_objective, baseline_maps("edges", pictures), masks, label="a method")
    method.sanity = [True, True]
    entries = [method, scored(blind, images, blind_objective, baseline_maps("random", pictures, 1), masks, ranking.BASELINE, "random map")]
    entries.append(scored(blind, images, blind_objective, perfect, masks, ranking.REFERENCE, "mask"))
    assert ranking.metric_checks(entries)["road"] is False
    assert ranking.recommended(entries) is None
    assert ranking.judge_only_moving_images(entries) == list(range(len(images)))  # the output ignores the input: every curve is flat
    assert ranking.verdict(entries)[0].startswith("The target's probability does not move when pixels are removed")


def test_the_ranking_on_the_shapes_model_with_masks(shapes_model):
    """The shipped model, fresh images with their object masks, through the runner as every front end calls it (12
    pictures: on 8 of these the mask's ROAD gap varies too much for its lead over a random map to be shown)."""
    images, masks = shapes_with_masks(12, seed=7)
    params = {"methods": "saliency,gradcam,guided_backprop", "smooth_samples": 0, "sanity_images": 1, "sensitivity_samples": 2}
    result = run_technique("attribution_ranking", shapes_model, images, params, masks=masks)
    by_label = {row["method"]: row for row in result.metrics["ranking"]}
    assert set(by_label) >= {"Gradient saliency", "Grad-CAM", "Grad-CAM++", "Guided backpropagation", "edges of the image (Sobel, no model)"}
    mask_row, random_row = by_label["the object mask (a perfect map)"], by_label["random map (uniform noise)"]
    assert mask_row["energy_ratio"] > by_label["edges of the image (Sobel, no model)"]["energy_ratio"] > random_row["energy_ratio"]
    assert mask_row["road_gap"] > random_row["road_gap"] + 0.2
    assert result.metrics["metric_checks"] == {"road": True, "localization": True}
    top = result.metrics["recommended"]
    assert top is None or by_label[top]["sanity_check"] == "passed"
    verdict = " ".join(result.metrics["verdict"])
    assert ("most faithful method that passes the sanity check" in verdict) == (top is not None)
    assert "localizes" in verdict
    table = next(artifact for artifact in result.artifacts if artifact.kind == "table")
    assert table.rows[0][:3] == ["method", "sanity check", "ROAD gap ↑ (95% CI)"] and len(table.rows) == len(by_label) + 1
    assert result.provenance["masks"] == [True] * 12
    job = {"technique": "attribution_ranking", "status": "done", "error": None, "model": {"name": "shapes_cnn"}, "result": result.to_json()}
    (section,) = [s for s in report_sections({"kind": "audit", "title": "t", "status": "done", "jobs": [job]}) if "believe" in s.title]
    assert section.sentences == result.metrics["verdict"] and len(section.rows) == len(by_label) + 1


# ---- parity with Quantus -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grey_case():
    """A 1-channel two-layer classifier (Quantus' ROAD indexes pixels as if the image had one channel)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        net[1].weight.mul_(8.0)
    model = load_model(export(net, 1, 16), mean="0", std="1")
    rng = np.random.default_rng(0)
    x = rng.random((12, 1, 16, 16)).astype(np.float32)
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    maps = rng.random((12, 16, 16)).astype(np.float32)
    return net, model, x, y, maps


def test_noisy_linear_imputation_matches_quantus():
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(0)
    for height, width, fraction in ((16, 16, 0.1), (24, 40, 0.5), (31, 17, 0.95), (130, 150, 0.4)):  # the last: SuperLU, not the band
        picture = rng.random((height, width, 3))
        removed = rng.permutation(height * width)[: int(fraction * height * width)]
        reference = noisy_linear_imputation(picture.transpose(2, 0, 1), removed, noise=0.0).transpose(1, 2, 0)
        assert np.abs(road.impute(picture, removed, noise=0.0) - reference).max() < 1e-12


def test_road_most_relevant_first_matches_quantus(grey_case):
    net, model, x, y, maps = grey_case
    percentages = [25, 50, 75]
    metric = quantus.ROAD(noise=0.0, percentages=percentages, normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
    reference = metric(model=net, x_batch=x, y_batch=y, a_batch=maps[:, None], device="cpu", softmax=False)
    kept = np.zeros((len(x), len(percentages)))
    for index, picture in enumerate(x):
        most, _ = road.removal_orders(maps[index])
        batch = road.road_images(picture.transpose(1, 2, 0), most, [p / 100 for p in percentages], 0.0, np.random.default_rng(0))
        kept[index] = model.predict(model.spec.unit_to_model(batch)).argmax(1) == y[index]
    assert np.allclose(kept.mean(0), [reference[p] for p in percentages])
    assert len(set(kept.mean(0))) > 1  # the curve moves, so the comparison says something


def test_pointing_game_and_energy_match_quantus(grey_case):
    net, model, x, y, maps = grey_case
    masks = np.zeros((len(x), 1, 16, 16))
    masks[:, :, 3:9, 5:12] = 1
    masks[1::2, :, 10:14, 2:6] = 1
    kwargs = {"model": net, "x_batch": x, "y_batch": y, "a_batch": maps[:, None], "s_batch": masks, "device": "cpu"}
    pointing = quantus.PointingGame(disable_warnings=True, abs=False, normalise=False)(**kwargs)
    mass = quantus.RelevanceMassAccuracy(disable_warnings=True, abs=False, normalise=False)(**kwargs)
    assert [localization.pointing_game(m, s[0].astype(bool)) for m, s in zip(maps, masks)] == [bool(v) for v in pointing]
    assert np.allclose([localization.energy_in_mask(m, s[0].astype(bool)) for m, s in zip(maps, masks)], mass, atol=1e-6)


def test_max_sensitivity_matches_quantus(grey_case):
    net, model, x, y, maps = grey_case
    images = torch.from_numpy(x)
    objective = objective_for(model, classes=torch.from_numpy(y))
    technique = Saliency()

    def map_fn(model_, batch, objective_):
        return technique.maps(model_, batch, objective_, {"smooth_samples": 0, "reduce": "max"})

    noise = stability.uniform_noise(model, images, 5, 0.05, seed=1)
    ours = stability.max_sensitivity(map_fn, model, images, objective, noise)
    draws = iter(noise)

    def perturb(arr, **_):  # Quantus hands the batch flattened to N x features
        return arr + next(draws).reshape(arr.shape)

    def explain(model, inputs, targets, **_):
        return map_fn(model_converted, torch.from_numpy(np.asarray(inputs, np.float32)), objective_for(model_converted, classes=torch.as_tensor(targets)))[
            :, None
        ]

    model_converted = model
    metric = quantus.MaxSensitivity(nr_samples=5, perturb_func=perturb, normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
    reference = metric(model=net, x_batch=x, y_batch=y, a_batch=map_fn(model, images, objective)[:, None], explain_func=explain, device="cpu")
    assert np.allclose(ours, reference, rtol=1e-5)
    assert ours.max() > 0


def test_input_invariance_catches_a_method_that_multiplies_by_the_input(patch_case):
    model, images, objective, pictures, perfect = patch_case
    technique = Saliency()

    def gradient(model_, batch, objective_):
        return technique.attribute(model_, batch, objective_, {}).abs().amax(1).numpy()

    def gradient_times_input(model_, batch, objective_):
        return (technique.attribute(model_, batch, objective_, {}) * batch).abs().amax(1).detach().numpy()

    assert stability.input_invariance(gradient, model, images[:2], objective.take([0, 1])).max() < stability.INVARIANT_BELOW
    assert stability.input_invariance(gradient_times_input, model, images[:2], objective.take([0, 1])).min() > 0.05


def test_the_verdict_never_praises_an_untrusted_method_and_survives_having_none():
    count = 6

    def entry(label, role, gap, energy, sanity=()):
        spread = np.linspace(0.0, 0.01, count)
        item = ranking.Scores(label, role, gap + spread, np.zeros((count, 2)), np.zeros((count, 2)), np.zeros(count), np.zeros(count), np.ones(count, bool))
        item.energy_ratio, item.sanity = energy + spread, list(sanity)
        return item

    mask, random = entry("the mask", ranking.REFERENCE, 0.8, 6.0), entry("random map", ranking.BASELINE, 0.0, 1.0)
    edges, failing = entry("edges of the image", ranking.BASELINE, 0.2, 2.0), entry("Bad", ranking.METHOD, 0.9, 5.0, [False])
    sentences = ranking.verdict([failing, random, edges, mask])
    assert ranking.recommended([failing, random, edges, mask]) is None
    assert not any(sentence.startswith("Bad localizes") for sentence in sentences) and "Localization is not reported" in " ".join(sentences)
    assert ranking.verdict([random, edges, mask])  # no method could be scored: still sentences, no error


# ---- verdicts that respect uncertainty ---------------------------------------------------------------------


def synthetic(label, gaps, role=ranking.METHOD, sanity=(True,), energy=None):
    gaps = np.asarray(gaps, np.float64)
    flat = np.zeros((len(gaps), 3))
    scores = ranking.Scores(label, role, gaps, flat, flat + 1, gaps, gaps, np.ones(len(gaps), bool), list(sanity))
    if energy is not None:
        scores.energy_ratio = np.asarray(energy, np.float64)
    return scores


def test_two_leaders_within_the_noise_are_tied_with_the_pictures_that_would_separate_them():
    rng = np.random.default_rng(1)
    base = rng.normal(0.3, 0.06, 10)
    first, second = synthetic("Grad-CAM", base + 0.01 + rng.normal(0, 0.03, 10)), synthetic("Guided Grad-CAM", base)
    random = synthetic("random map (uniform noise)", rng.normal(0, 0.02, 10), ranking.BASELINE)
    sentences = ranking.verdict([first, second, random])
    assert sentences[0].startswith("On this model the most faithful methods that pass the sanity check are Grad-CAM and Guided Grad-CAM")
    assert "are tied: ROAD cannot separate them on these 10 pictures" in sentences[1] and "pictures would separate the first two" in sentences[1]
    value, note = ranking.recommendation([first, second, random], sentences)
    assert value == "Grad-CAM or Guided Grad-CAM (tied)" and "tied" in note


def test_a_lead_that_holds_across_the_bootstrap_names_one_method():
    rng = np.random.default_rng(2)
    base = rng.normal(0.3, 0.06, 10)
    first, second = synthetic("Grad-CAM", base + 0.15), synthetic("Saliency", base)
    random = synthetic("random map (uniform noise)", rng.normal(0, 0.02, 10), ranking.BASELINE)
    edges = synthetic("edges of the image (Sobel, no model)", base + 0.15 + rng.normal(0, 0.01, 10), ranking.BASELINE)
    sentences = ranking.verdict([first, second, random, edges])
    assert sentences[0].startswith("On this model Grad-CAM is the most faithful method that passes the sanity check (ROAD gap ")
    assert "95% CI" in sentences[0] and "n = 10" in sentences[0]
    value, note = ranking.recommendation([first, second, random, edges], sentences)
    assert value == "Grad-CAM" and note.startswith("But it is not more faithful than edges of the image")  # the qualifier travels with it


@pytest.mark.parametrize(
    "sanity,status,fragment",
    [
        ((False, True), "undecided", "failed the sanity check on 1 of 2 pictures checked: not enough pictures to judge"),
        ((False, False), "FAILED", "fails the sanity check on 2 of 2 pictures (95% CI of its failure rate 34%-100%)"),
        ((True,) * 35 + (False,) * 5, "undecided", "5 of 40 pictures checked"),
        ((False,) * 10 + (True,) * 2, "FAILED", "10 of 12 pictures"),
        ((True, True), "passed", None),
    ],
)
def test_a_method_fails_the_sanity_check_only_when_its_failure_rate_says_so(sanity, status, fragment):
    method = synthetic("Grad-CAM++", [0.2, 0.3], sanity=sanity)
    random = synthetic("random map (uniform noise)", [0.0, 0.01], ranking.BASELINE)
    assert method.sanity_status == status
    sentences = " ".join(ranking.verdict([method, random]))
    if fragment:
        assert fragment in sentences and ("do not trust it" in sentences) == (status == "FAILED")
    assert method.trusted == (status == "passed")


def test_two_pictures_never_make_a_lead_however_large():
    """Below evidence.MIN_PAIRED pictures no map is shown to beat another: on 2 pictures the percentile bootstrap was
    just their minimum and maximum, and a sign test cannot reach 5% below 6."""
    method = synthetic("Grad-CAM", [0.8, 0.9])
    random = synthetic("random map (uniform noise)", [0.0, 0.01], ranking.BASELINE)
    assert not ranking.leads(method, random) and ranking.recommended([method, random]) is None
    (first,) = ranking.verdict([method, random])
    assert "can be shown to be more faithful than a random map on these 2 pictures" in first and "fewer than 6 pictures cannot show it" in first
    assert ranking.recommendation([method, random], [first]) == (None, first)


def test_six_methods_no_better_than_random_are_rarely_recommended():
    """The best of several is tested at a Bonferroni-corrected level: with six methods whose gaps come from the same
    distribution as the random map's, 10 pictures each, a method is recommended in at most 5% of 400 audits."""
    rng = np.random.default_rng(11)
    recommended = 0
    for _ in range(400):
        base = rng.normal(0.0, 0.1, 10)  # what every map shares on a picture
        methods = [synthetic(f"method {index}", base + rng.normal(0, 0.1, 10)) for index in range(6)]
        random = synthetic("random map (uniform noise)", base + rng.normal(0, 0.1, 10), ranking.BASELINE)
        recommended += ranking.recommended([*methods, random]) is not None
    assert recommended <= 20, recommended


def test_a_high_variance_leader_that_cannot_beat_random_gives_way_and_is_named():
    """The method recommended is one shown to beat the random map; a higher mean that varies too much is named, not
    recommended, and a method tied with the best that cannot beat the random map is not offered as its equal."""
    rng = np.random.default_rng(5)
    steady = synthetic("Grad-CAM", 0.3 + rng.normal(0, 0.02, 10))
    wild = synthetic("Saliency", np.array([2.5, -1.8, 2.2, -1.5, 2.4, -1.9, 2.6, -1.2, 2.1, -1.4]))
    random = synthetic("random map (uniform noise)", rng.normal(0, 0.02, 10), ranking.BASELINE)
    scores = [wild, steady, random]
    assert wild.gap()[0] > steady.gap()[0] and ranking.recommended(scores) is steady
    sentences = ranking.verdict(scores)
    assert sentences[0].startswith("On this model Grad-CAM is the most faithful method that passes the sanity check")
    assert any(sentence.startswith("Saliency has a higher mean ROAD gap but cannot be shown to be more faithful than a random map") for sentence in sentences)
    value, note = ranking.recommendation(scores, sentences)
    assert value == "Grad-CAM" and "Grad-CAM passed the sanity check on 1 of 1 picture checked" in note


def test_a_tie_over_too_few_shared_pictures_says_so():
    """Two methods each shown to beat the random map, but measured together on one picture only (flat curves elsewhere)."""
    nan = float("nan")
    first = synthetic("Grad-CAM", [0.5, 0.52, 0.55, 0.5, 0.51, 0.53, 0.5, nan, nan, nan, nan, nan])
    second = synthetic("Guided Grad-CAM", [nan, nan, nan, nan, nan, nan, 0.4, 0.41, 0.43, 0.4, 0.42, 0.44])
    random = synthetic("random map (uniform noise)", np.linspace(0, 0.01, 12), ranking.BASELINE)
    sentences = ranking.verdict([first, second, random])
    assert "Grad-CAM and Guided Grad-CAM are tied: ROAD cannot separate them on these 1 pictures" in sentences[1]
    assert "fewer than 6 pictures cannot separate any two maps" in sentences[1]


def test_two_localizers_within_the_noise_are_named_together():
    rng = np.random.default_rng(8)
    base = rng.normal(3.0, 0.3, 10)
    gaps = 0.3 + rng.normal(0, 0.02, 10)
    first = synthetic("Grad-CAM", gaps, energy=base + 0.02 + rng.normal(0, 0.05, 10))
    second = synthetic("Grad-CAM++", gaps - 0.001, energy=base)
    random = synthetic("random map (uniform noise)", rng.normal(0, 0.02, 10), ranking.BASELINE, energy=np.ones(10))
    edges = synthetic("edges of the image (Sobel, no model)", rng.normal(0.1, 0.02, 10), ranking.BASELINE, energy=base - 1.5)
    mask = synthetic("the object mask (a perfect map)", 0.6 + rng.normal(0, 0.02, 10), ranking.REFERENCE, energy=base + 2)
    sentences = " ".join(ranking.verdict([first, second, random, edges, mask]))
    assert "Grad-CAM and Grad-CAM++ localize best, tied on these pictures (energy on the object" in sentences


def test_the_localization_sentence_names_the_method_shown_to_beat_the_model_free_maps_not_the_noisiest_mean():
    """A wild method with the highest mean energy beats nothing for sure; a steady one beats the centre Gaussian but
    not the edges: the sentence names the steady one and says which map it beats and which it does not."""
    rng = np.random.default_rng(4)
    gaps = 0.3 + rng.normal(0, 0.02, 12)
    wild = synthetic("Saliency", gaps, energy=np.array([9.0, 0.5] * 6))
    steady = synthetic("Grad-CAM", gaps - 0.001, energy=2.6 + rng.normal(0, 0.05, 12))
    random = synthetic("random map (uniform noise)", rng.normal(0, 0.02, 12), ranking.BASELINE, energy=np.ones(12))
    centre = synthetic("centre Gaussian", rng.normal(0.2, 0.02, 12), ranking.BASELINE, energy=1.9 + rng.normal(0, 0.05, 12))
    edges = synthetic("edges of the image (Sobel, no model)", rng.normal(0.1, 0.02, 12), ranking.BASELINE, energy=2.6 + rng.normal(0, 0.3, 12))
    mask = synthetic("the object mask (a perfect map)", 0.6 + rng.normal(0, 0.02, 12), ranking.REFERENCE, energy=6 + rng.normal(0, 0.1, 12))
    assert wild.localization()[0] > steady.localization()[0]
    (sentence,) = [s for s in ranking.verdict([wild, steady, random, centre, edges, mask]) if "localize" in s]
    assert sentence.startswith("Grad-CAM localizes better than centre Gaussian but not better than edges of the image"), sentence
