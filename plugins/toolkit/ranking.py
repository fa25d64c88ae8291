"""Scoring attribution methods side by side and saying which one to believe.

Each candidate (an installed method with some parameters, a model-free baseline, or the object mask itself when
the image set gives one) is scored on the same images and targets with:

- the sanity check (model-parameter randomization, Adebayo et al. 2018), methods only: a map that survives the
  destruction of the weights explains the image, not the model;
- ROAD (Rong et al. 2022), the ranking signal for faithfulness: ``gap`` = LeRF - MoRF, higher is better;
- deletion and insertion (Petsiuk et al. 2018), shown but not ranked on: their constant-filled holes take the
  image out of distribution;
- with object masks: the pointing game (Zhang et al. 2016) and the map's energy on the object divided by the
  object's area (1 = no better than a uniform map);
- input invariance (Kindermans et al. 2019) and max-sensitivity (Yeh et al. 2019).

``verdict`` turns the scores into plain sentences that never say more than the pictures hold
(``viz_server.evidence``): a method is trusted only when it passed the sanity check on every picture it was
checked on; it "fails" only when its failure rate's 95% Wilson interval lies above ``TOLERATED_FAILURES``
(otherwise there are not enough pictures to judge); one map is more faithful or localizes better than another
only when the 95% bootstrap interval of their paired difference over the pictures excludes zero; and two
leading methods that the pictures cannot separate are called tied, with about how many pictures would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from viz_server.evidence import MIN_PAIRED, mean_interval, paired_difference, pictures_to_separate, shown, shown_by_pairs, shown_interval, wilson
from viz_server_plugins.toolkit.degenerate import flat_curves
from viz_server_plugins.toolkit.stability import INVARIANT_BELOW

METHOD, BASELINE, REFERENCE = "method", "baseline", "reference"
TOLERATED_FAILURES = 0.25
"""A method "fails" the sanity check when, with 95% confidence, it fails on more than this share of pictures."""


@dataclass
class Scores:
    label: str
    role: str  # METHOD | BASELINE | REFERENCE
    road_gap: np.ndarray  # per image
    road_morf: np.ndarray
    road_lerf: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    usable: np.ndarray  # bool per image: the map can support a conclusion (not empty, constant or non-finite)
    sanity: list[bool | None] = field(default_factory=list)  # per checked image; None = cannot judge
    pointing: np.ndarray | None = None  # bool per image with a mask
    energy_ratio: np.ndarray | None = None  # energy on the object / object's share of the image
    invariance: float | None = None  # relative L1 change under a constant input shift
    sensitivity: float | None = None  # max-sensitivity, mean over the checked images
    seconds: float | None = None  # computing the maps, per image (what the method costs on this model)

    # ---- summaries ---------------------------------------------------------------------------------
    @staticmethod
    def _mean_and_error(values) -> tuple[float, float]:
        values = np.asarray([v for v in np.ravel(values) if np.isfinite(v)], np.float64)
        if values.size == 0:
            return float("nan"), float("nan")
        error = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
        return float(values.mean()), error

    def gap(self) -> tuple[float, float]:
        """Mean ROAD gap over the usable maps and its standard error."""
        return self._mean_and_error(self.road_gap[self.usable])

    def localization(self) -> tuple[float, float]:
        return self._mean_and_error(self.energy_ratio[self.usable] if self.energy_ratio is not None else [])

    def per_picture(self, metric: str) -> np.ndarray:
        """One value per picture of ``gap`` or ``localization``, NaN where the map is unusable or nothing was measured."""
        values = self.road_gap if metric == "gap" else self.energy_ratio if self.energy_ratio is not None else np.full(self.usable.shape, np.nan)
        return np.where(self.usable, np.asarray(values, np.float64), np.nan)

    def interval(self, metric: str) -> tuple[float, float] | None:
        """The 95% interval (Student's t over pictures) of the mean ``gap`` or ``localization``."""
        return mean_interval(self.per_picture(metric))

    @property
    def sanity_failures(self) -> tuple[int, int]:
        """(pictures on which the sanity check failed, pictures it could judge)."""
        judged = [passed for passed in self.sanity if passed is not None]
        return sum(1 for passed in judged if not passed), len(judged)

    @property
    def sanity_status(self) -> str:
        """passed (on every judged picture) | FAILED (the failure rate's interval lies above ``TOLERATED_FAILURES``) |
        undecided (failures, but too few pictures to call it failing) | cannot judge | n/a (baselines)."""
        if self.role != METHOD:
            return "n/a"
        failures, judged = self.sanity_failures
        if not judged:
            return "cannot judge"
        if not failures:
            return "passed"
        interval = wilson(failures, judged)
        return "FAILED" if interval is not None and interval[0] > TOLERATED_FAILURES else "undecided"

    @property
    def trusted(self) -> bool:
        return self.role == METHOD and self.sanity_status == "passed" and bool(self.usable.all())

    def to_json(self) -> dict:
        gap, gap_error = self.gap()
        energy, energy_error = self.localization()

        def rounded(value):
            return None if value is None or not np.isfinite(value) else round(float(value), 4)

        def mean(values):
            values = np.asarray(values, np.float64)[self.usable] if values is not None else np.array([])
            values = values[np.isfinite(values)]  # a flat curve measured nothing
            return rounded(values.mean()) if values.size else None

        gap_interval = self.interval("gap")
        return {
            "method": self.label,
            "role": self.role,
            "sanity_check": self.sanity_status,
            "sanity_passed": sum(1 for passed in self.sanity if passed),
            "sanity_judged": sum(1 for passed in self.sanity if passed is not None),
            "road_gap": rounded(gap),
            "road_gap_error": rounded(gap_error),
            "road_gap_low": rounded(gap_interval[0]) if gap_interval else None,
            "road_gap_high": rounded(gap_interval[1]) if gap_interval else None,
            "road_gap_count": int(np.isfinite(self.per_picture("gap")).sum()),
            "road_morf": mean(self.road_morf.mean(1) if self.road_morf.ndim == 2 else self.road_morf),
            "road_lerf": mean(self.road_lerf.mean(1) if self.road_lerf.ndim == 2 else self.road_lerf),
            "deletion_auc": mean(self.deletion_auc),
            "insertion_auc": mean(self.insertion_auc),
            "pointing_game": mean(self.pointing.astype(np.float64)) if self.pointing is not None else None,
            "energy_ratio": rounded(energy),
            "energy_ratio_error": rounded(energy_error),
            "input_invariance": rounded(self.invariance),
            "input_invariant": None if self.invariance is None else bool(self.invariance < INVARIANT_BELOW),
            "max_sensitivity": rounded(self.sensitivity),
            "usable_maps": int(self.usable.sum()),
            "maps": int(self.usable.size),
            "seconds_per_image": None if self.seconds is None else round(float(self.seconds), 4),
        }


def order(scores: list[Scores]) -> list[Scores]:
    """Trusted methods by ROAD gap, then the other methods, then baselines, then the reference mask."""

    def key(item: Scores):
        gap = item.gap()[0]
        group = 0 if item.trusted else 1 if item.role == METHOD else 2 if item.role == BASELINE else 3
        return group, -(gap if np.isfinite(gap) else -np.inf)

    return sorted(scores, key=key)


def leads(first: Scores, second: Scores, metric: str = "gap", comparisons: int = 1) -> bool:
    """Does ``first`` score higher than ``second`` on ``metric`` ("gap" or "localization") on these pictures: at least
    ``evidence.MIN_PAIRED`` pictures both measured, and the paired t interval of the difference above zero at 95%
    (Bonferroni-corrected for ``comparisons`` such claims made together)?"""
    return shown_by_pairs(first.per_picture(metric), second.per_picture(metric), comparisons)


def metric_checks(scores: list[Scores]) -> dict[str, bool | None]:
    """Whether each ranking signal can tell a perfect map from a random one on these images: the object mask (when
    given) must lead the random map. None when there is no mask to check with."""
    reference = next((item for item in scores if item.role == REFERENCE), None)
    random = next((item for item in scores if item.label.startswith("random")), None)
    if reference is None or random is None:
        return {"road": None, "localization": None}
    return {"road": leads(reference, random), "localization": leads(reference, random, "localization")}


def _random_map(scores: list[Scores]) -> Scores | None:
    return next((item for item in scores if item.role == BASELINE and item.label.startswith("random")), None)


def _ahead(scores: list[Scores]) -> tuple[list[Scores], list[Scores]]:
    """(the trusted methods shown to be more faithful than the random map, best mean ROAD gap first, each tested at
    the Bonferroni-corrected level for all trusted methods at once; the other trusted methods)."""
    trusted = sorted((item for item in scores if item.trusted and np.isfinite(item.gap()[0])), key=lambda item: -item.gap()[0])
    random = _random_map(scores)
    if random is None:
        return trusted, []
    ahead = [item for item in trusted if leads(item, random, comparisons=len(trusted))]
    return ahead, [item for item in trusted if item not in ahead]


def _best_trusted(scores: list[Scores]) -> tuple[Scores | None, list[Scores]]:
    """(the most faithful trusted method shown to beat the random map, the others shown to beat it that it does not
    lead: tied with it)."""
    ahead, _behind = _ahead(scores)
    if not ahead:
        return None, []
    return ahead[0], [item for item in ahead[1:] if not leads(ahead[0], item)]


def recommended(scores: list[Scores]) -> Scores | None:
    """The method to believe: the most faithful (ROAD) of those that pass the sanity check and are shown to beat the
    random map, provided ROAD can tell the object mask from a random map (when masks are given); else None. (The
    methods it is tied with are named by ``recommendation``.)"""
    if metric_checks(scores)["road"] is False:
        return None
    return _best_trusted(scores)[0]


def tie(best: Scores, tied: list[Scores]) -> str:
    """The sentence saying the leading methods are tied (ROAD cannot separate them on these pictures), with about how
    many pictures would separate the best from the closest, or ""."""
    if not tied:
        return ""
    closest = tied[0]
    _difference, _interval, count = paired_difference(best.per_picture("gap"), closest.per_picture("gap"))
    needed = pictures_to_separate(best.per_picture("gap"), closest.per_picture("gap"))
    if count < MIN_PAIRED:
        more = f"fewer than {MIN_PAIRED} pictures cannot separate any two maps"
    elif needed:
        more = f"about {needed} pictures would separate the first two if the difference holds"
    else:
        more = "the first two do not differ at all here"
    names = _listed([best.label, *(item.label for item in tied)])
    return f"{names} are tied: ROAD cannot separate them on these {count} pictures (gaps {_figure(best)} and {_figure(closest)}); {more}."


def _listed(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _figure(item: Scores, metric: str = "gap") -> str:
    """A mean with its 95% interval and count, rounded as the table rounds them (to 4 places, shown to 3)."""
    mean = item.gap()[0] if metric == "gap" else item.localization()[0]
    interval = item.interval(metric)
    count = int(np.isfinite(item.per_picture(metric)).sum())
    return shown(round(mean, 4), (round(interval[0], 4), round(interval[1], 4)) if interval else None, count)


def _sanity_count(item: Scores) -> str:
    failures, judged = item.sanity_failures
    return f"{item.label} passed the sanity check on {judged - failures} of {judged} picture{'s' if judged != 1 else ''} checked"


def recommendation(scores: list[Scores], sentences: list[str]) -> tuple[str | None, str]:
    """The headline an audit's summary card shows: the method to believe (or methods, when tied), and everything
    the verdict says that qualifies it (ties, maps that never look at the model doing as well, how many pictures the
    sanity check saw); None and the verdict's first sentence when none can be recommended."""
    best = recommended(scores)
    if best is None:
        return None, sentences[0] if sentences else "no method could be ranked"
    _best, tied = _best_trusted(scores)
    others = f" (and {len(tied) - 1} more)" if len(tied) > 1 else ""
    value = f"{best.label} or {tied[0].label}{others} (tied)" if tied else best.label
    qualifiers = [sentence for sentence in sentences if sentence.startswith("But ") or " are tied" in sentence]
    checked = "; ".join(_sanity_count(item) for item in [best, *tied])
    return value, " ".join([*dict.fromkeys(qualifiers), f"ROAD gap {_figure(best)}; {checked}."])


def judge_only_moving_images(scores: list[Scores]) -> list[int]:
    """Images on which the target never moved, whatever map chose the pixels to remove (every ROAD curve of every
    map flat: a saturated objective), cannot rank maps: their gaps become NaN (left out of every mean); returns
    their indices. One map's flat curves alone are a measurement (it never removed what matters)."""
    if not scores:
        return []
    still = np.all([flat_curves(np.concatenate([item.road_morf, item.road_lerf], axis=1)) for item in scores], axis=0)
    for item in scores:
        item.road_gap = np.where(still, np.nan, item.road_gap)
    return [int(index) for index in np.flatnonzero(still)]


def verdict(scores: list[Scores]) -> list[str]:
    """Plain sentences: which method to believe on this model, which not to, and how they compare with maps that
    never look at the model."""
    methods = [item for item in scores if item.role == METHOD]
    baselines = [item for item in scores if item.role == BASELINE]
    random = next((item for item in baselines if item.label.startswith("random")), None)
    checks = metric_checks(scores)
    sentences = []
    failing = [item for item in methods if item.sanity_status == "FAILED"]
    undecided = [item for item in methods if item.sanity_status == "undecided"]
    unjudged = [item.label for item in methods if item.sanity_status == "cannot judge"]
    trusted = [item for item in methods if item.trusted]
    if all(not np.isfinite(item.road_gap).any() for item in scores):
        sentences.append(
            "The target's probability does not move when pixels are removed (every ROAD curve is flat), so ROAD cannot judge any "
            "map on these images: no method is ranked. A saturated or one-channel objective does this; explain another target."
        )
    elif checks["road"] is False:
        sentences.append(
            "ROAD cannot tell the object mask from a random map on these images, so no method is ranked by faithfulness; read the pictures with care."
        )
    elif not trusted:
        sentences.append("No method passes the sanity check on every image with a usable map, so none can be recommended on this model.")
    else:
        best, tied = _best_trusted(scores)
        measured = [item for item in trusted if np.isfinite(item.gap()[0])]
        if not measured:
            sentences.append("No method that passes the sanity check has a ROAD gap measured on these images, so none can be recommended.")
        elif best is None and random is not None:
            top = max(measured, key=lambda item: item.gap()[0])
            pictures = int(np.isfinite(top.per_picture("gap")).sum())
            few = f"; fewer than {MIN_PAIRED} pictures cannot show it" if pictures < MIN_PAIRED else ""
            sentences.append(
                f"No method that passes the sanity check can be shown to be more faithful than a random map on these {pictures} pictures "
                f"(highest mean: {top.label}, ROAD gap {_figure(top)}; random map {_figure(random)}{few}); these maps cannot support a "
                "conclusion on this model."
            )
        elif best is not None:
            if tied:
                names = _listed([best.label, *(item.label for item in tied)])
                sentences.append(f"On this model the most faithful methods that pass the sanity check are {names}.")
                sentences.append(tie(best, tied))
            else:
                sentences.append(f"On this model {best.label} is the most faithful method that passes the sanity check (ROAD gap {_figure(best)}).")
            model_free = [item for item in baselines if not item.label.startswith("random") and not leads(best, item)]
            if model_free:
                which = "which never looks" if len(model_free) == 1 else "which never look"
                sentences.append(f"But it is not more faithful than {' or '.join(item.label for item in model_free)}, {which} at the model.")
            higher = [item for item in _ahead(scores)[1] if item.gap()[0] > best.gap()[0]]
            if higher:
                sentences.append(
                    f"{_listed([item.label for item in higher])} {'has' if len(higher) == 1 else 'have'} a higher mean ROAD gap but cannot be shown to "
                    "be more faithful than a random map on these pictures (their gaps vary too much)."
                )
    for item in failing:
        failures, judged = item.sanity_failures
        low, high = wilson(failures, judged) or (0.0, 1.0)
        sentences.append(
            f"{item.label} fails the sanity check on {failures} of {judged} pictures (95% CI of its failure rate {low:.0%}-{high:.0%}): "
            "the map barely changes when the weights are destroyed; do not trust it."
        )
    for item in undecided:
        failures, judged = item.sanity_failures
        low, high = wilson(failures, judged) or (0.0, 1.0)
        sentences.append(
            f"{item.label} failed the sanity check on {failures} of {judged} pictures checked: not enough pictures to judge (its failure rate "
            f"could be anywhere from {low:.0%} to {high:.0%}); it is not recommended until more pictures are checked (sanity_images)."
        )
    if unjudged:
        sentences.append(
            f"The sanity check cannot judge {', '.join(unjudged)}: the map, or the map after randomizing the weights, is empty or "
            "constant, so no correlation can be measured; not recommended without a verdict."
        )
    free = [item for item in baselines if item.label.startswith(("edges", "centre"))]  # model-free maps that find objects
    if checks["localization"] is False:
        sentences.append("The object masks do not beat a random map by energy on the object; localization is not evidence here.")
    elif checks["localization"] and free:
        if not trusted:
            sentences.append("Localization is not reported for methods that did not pass the sanity check.")
        else:
            sentences.append(_localization(trusted, free))
    variant = [item.label for item in methods if item.invariance is not None and item.invariance >= INVARIANT_BELOW]
    if variant:
        sentences.append(f"{', '.join(variant)} change{'s' if len(variant) == 1 else ''} when a constant is added to the input (Kindermans et al. 2019).")
    return sentences


def _localization(trusted: list[Scores], free: list[Scores]) -> str:
    """Which trusted method localizes best: the one shown to beat the most model-free maps (edges, a centre
    Gaussian) by energy on the object, then the highest mean. Every trusted method is tested against every such
    map (paired, Bonferroni-corrected for all those comparisons), so "no method beats them" is a claim about each."""
    comparisons = len(trusted) * len(free)
    beats = {id(item): [other for other in free if leads(item, other, "localization", comparisons)] for item in trusted}
    best = max(trusted, key=lambda item: (len(beats[id(item)]), item.localization()[0]))
    beaten = beats[id(best)]
    unbeaten = [item for item in free if item not in beaten]
    figures = "; ".join(f"{item.label} {_figure(item, 'localization')}" for item in free)
    if not beaten:
        return f"No trusted method localizes better than {' or '.join(item.label for item in free)} (best: {best.label}, {_figure(best, 'localization')}; {figures})."
    level = [item for item in trusted if item is not best and beats[id(item)] == beaten and not leads(best, item, "localization")]
    names = _listed([best.label, *(item.label for item in level)])
    verb = "localize" if level else "localizes"
    if unbeaten:
        return (
            f"{names} {verb} better than {_listed([item.label for item in beaten])} but not better than "
            f"{_listed([item.label for item in unbeaten])} (energy on the object {_figure(best, 'localization')} times a uniform map's; {figures})."
        )
    tied = ", tied on these pictures" if level else ""
    return f"{names} {verb} best{tied} (energy on the object {_figure(best, 'localization')} times a uniform map's; {figures})."


def table(scores: list[Scores], with_masks: bool) -> list[list]:
    """Rows for a table artifact; the first row is the header."""
    header = ["method", "sanity check", "ROAD gap ↑ (95% CI)", "ROAD MoRF ↓", "ROAD LeRF ↑", "deletion AUC ↓", "insertion AUC ↑"]
    if with_masks:
        header += ["pointing game ↑", "energy on object / area ↑"]
    header += ["input invariant", "max-sensitivity ↓", "seconds per image"]
    rows = [header]

    def cell(value, error=None, low=None, high=None):
        if value is None:
            return "—"
        if low is not None and high is not None:
            return f"{value:.3f} ({shown_interval(low, high)})"
        return f"{value:.3f} ± {error:.3f}" if error is not None else f"{value:.3f}"

    for item in scores:
        data = item.to_json()
        sanity = data["sanity_check"]
        if data["sanity_judged"]:
            sanity = f"{sanity} ({data['sanity_passed']}/{data['sanity_judged']})"
        row = [
            item.label + ("" if data["usable_maps"] == data["maps"] else f" ({data['maps'] - data['usable_maps']} unusable maps)"),
            "model-free" if item.role == BASELINE else "reference" if item.role == REFERENCE else sanity,
            cell(data["road_gap"], None, data["road_gap_low"], data["road_gap_high"]),
            cell(data["road_morf"]),
            cell(data["road_lerf"]),
            cell(data["deletion_auc"]),
            cell(data["insertion_auc"]),
        ]
        if with_masks:
            row += [cell(data["pointing_game"]), cell(data["energy_ratio"], data["energy_ratio_error"])]
        row += ["—" if data["input_invariant"] is None else "yes" if data["input_invariant"] else "NO", cell(data["max_sensitivity"])]
        row += ["—" if data["seconds_per_image"] is None else f"{data['seconds_per_image']:.3g}"]
        rows.append(row)
    return rows
