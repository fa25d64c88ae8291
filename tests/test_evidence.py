"""The intervals every headline figure and verdict carries (viz_server.evidence), against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from viz_server.audit import Gate
from viz_server.evidence import MIN_PAIRED, bootstrap, mean_interval, paired_difference, pictures_to_separate, shown, shown_by_pairs, wilson
from viz_server.techniques import proportion_headline, sample_headline


@pytest.mark.parametrize("successes,count", [(0, 2), (1, 2), (2, 2), (6, 6), (5, 40), (35, 40), (500, 1000)])
def test_wilson_matches_statsmodels_formula(successes, count):
    """The Wilson score interval, against its closed form with scipy's normal quantile."""
    z = stats.norm.ppf(0.975)
    p = successes / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    low, high = wilson(successes, count)
    assert low == pytest.approx(max(0, centre - half), abs=1e-9) and high == pytest.approx(min(1, centre + half), abs=1e-9)
    assert 0 <= low <= p <= high <= 1


def test_known_wilson_intervals():
    assert wilson(6, 6)[0] == pytest.approx(0.6097, abs=1e-4)  # "accuracy 1.000" on six pictures is at least 0.61
    assert wilson(1, 2) == pytest.approx((0.0945, 0.9055), abs=1e-4)
    assert wilson(0, 0) is None


def test_the_bootstrap_covers_the_mean_is_seeded_and_needs_two_pictures():
    samples = np.random.default_rng(3).normal(0.3, 0.1, 40)
    low, high = bootstrap(samples)
    assert low < samples.mean() < high and bootstrap(samples) == (low, high)
    t_low, t_high = stats.t.interval(0.95, 39, loc=samples.mean(), scale=stats.sem(samples))
    assert abs(low - t_low) < 0.01 and abs(high - t_high) < 0.01  # close to the t interval on normal data
    assert bootstrap([0.5]) is None and bootstrap([0.5, float("nan")]) is None


def test_paired_differences_and_the_pictures_that_would_separate_them():
    rng = np.random.default_rng(0)
    base = rng.normal(0.3, 0.1, 10)
    clear = paired_difference(base + 0.2, base)
    assert clear[0] == pytest.approx(0.2) and clear[1][0] > 0 and clear[2] == 10
    noisy_a, noisy_b = base + rng.normal(0.01, 0.05, 10), base
    assert paired_difference(noisy_a, noisy_b)[1][0] < 0 < paired_difference(noisy_a, noisy_b)[1][1]
    needed = pictures_to_separate(noisy_a, noisy_b)
    differences = noisy_a - noisy_b
    assert needed == max(10, math.ceil(((1.959964 + 0.841621) * differences.std(ddof=1) / abs(differences.mean())) ** 2))
    assert pictures_to_separate(base, base) is None


def test_headline_helpers_carry_count_and_interval():
    figure = proportion_headline(6, 6, "accuracy")
    assert (figure["value"], figure["count"], figure["high"]) == (1.0, 6, 1.0) and figure["low"] == pytest.approx(0.6097, abs=1e-4)
    assert proportion_headline(0, 0, "accuracy")["value"] is None
    mean = sample_headline([0.1, 0.2, 0.3], "gap")
    assert mean["count"] == 3 and mean["low"] <= 0.2 <= mean["high"]
    assert shown(0.5, (0.4, 0.6), 12) == "0.500 (95% CI 0.400-0.600, n = 12)"
    assert shown(2e-5, (-1e-5, 5e-5), 8) == "2.00e-05 (95% CI -1.00e-05 to 5.00e-05, n = 8)"  # no bound reads as zero


def test_the_mean_interval_is_students_t():
    samples = np.random.default_rng(4).normal(0.3, 0.2, 7)
    low, high = stats.t.interval(0.95, 6, loc=samples.mean(), scale=stats.sem(samples))
    assert mean_interval(samples) == pytest.approx((low, high), abs=1e-12)
    assert mean_interval([0.4, float("nan")]) is None
    figure = sample_headline(samples, "gap")
    assert (figure["low"], figure["high"]) == pytest.approx((low, high), abs=1e-12)


def test_a_paired_lead_needs_six_pictures_and_pays_for_each_comparison():
    assert not shown_by_pairs([1.0] * (MIN_PAIRED - 1), [0.0] * (MIN_PAIRED - 1))
    rng = np.random.default_rng(6)
    base = rng.normal(0, 0.1, 12)
    ahead = base + 0.05 + rng.normal(0, 0.05, 12)
    _mean, interval, _count = paired_difference(ahead, base)
    alone, corrected = shown_by_pairs(ahead, base), shown_by_pairs(ahead, base, comparisons=20)
    assert alone == (interval[0] > 0)
    _mean, strict, _count = paired_difference(ahead, base, 1 - 0.05 / 20)
    assert corrected == (strict[0] > 0) and strict[0] < interval[0]


def test_a_gate_compares_the_figure_itself_not_its_rounding():
    """17,999 of 20,000 is 0.89995: it must fail ``accuracy=0.9`` although it prints as 0.900."""
    figure = proportion_headline(17999, 20000, "accuracy")
    assert figure["value"] < 0.9 and Gate.parse("accuracy=0.9", under=True).failure({"accuracy": figure})
    assert Gate.parse("accuracy.low=0.89", under=True).failure({"accuracy": figure}) is None


def test_the_card_says_cannot_be_claimed_once():
    from viz_server_plugins.report_summary import _shown

    assert _shown({"value": None, "note": "cannot be claimed: the attack's gradient vanished", "count": 4}) == (
        "cannot be claimed: the attack's gradient vanished (n = 4)"
    )
    assert _shown({"value": 3e-4, "low": 1e-4, "high": 5e-4, "count": 9, "note": ""}) == "3.00e-04 (95% CI 1.00e-04 to 5.00e-04, n = 9)"


@pytest.mark.slow
def test_every_builtin_headline_carries_its_count_and_interval(shapes_model):
    """Robustness, corruptions, shape bias and the ranking, on the shipped model: a figure measured on pictures says
    on how many, and with 2 or more its 95% interval; the ranking's recommendation carries its qualifier."""
    import io

    from PIL import Image

    from viz_server.runner import run_technique
    from viz_server_models import shapes

    data = shapes.make_dataset(8, seed=3, congruent_fraction=1.0)
    pictures, labels = [], []
    for index, (picture, label) in enumerate(zip(data.images, data.shape_labels)):
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        pictures.append((f"{index}.png", buffer.getvalue()))
        labels.append(shapes.CLASSES[int(label)])
    runs = {
        "robustness_curve": run_technique("robustness_curve", shapes_model, pictures, {"epsilons": "0,8/255", "attacks": "pgd", "steps": 5}, labels=labels),
        "corruptions": run_technique("corruptions", shapes_model, pictures, {"corruptions": "gaussian_noise,contrast"}, labels=labels),
        "shape_bias": run_technique("shape_bias", shapes_model, raw_params={"per_pair": 4}),
        "attribution_ranking": run_technique("attribution_ranking", shapes_model, pictures[:4], {"methods": "saliency,gradcam", "sanity_images": 1}),
    }
    for technique, result in runs.items():
        for key, figure in result.metrics["headline"].items():
            assert {"value", "label", "better", "note", "count", "low", "high"} <= set(figure), (technique, key)
            if isinstance(figure["value"], float):
                assert figure["count"] and figure["count"] >= 2 and figure["low"] <= figure["value"] <= figure["high"], (technique, key, figure)
    accuracy = runs["robustness_curve"].metrics["headline"]["accuracy"]
    assert accuracy["count"] == 8 and (accuracy["low"], accuracy["high"]) == pytest.approx(wilson(round(accuracy["value"] * 8), 8), abs=1e-4)
    recommended = runs["attribution_ranking"].metrics["headline"]["recommended_explanation"]
    assert recommended["note"] and "4 pictures" in recommended["label"]
