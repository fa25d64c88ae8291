"""Which explanation to believe on this model: every installed class attribution, and maps that never look at
the model, scored side by side on the user's images (see ``toolkit.ranking`` for the scores and the verdict).

Methods come from every plugin (``class_attributions``), each with its default parameters, the variants it
declares (``ranking_variants``, e.g. Grad-CAM++) and, for gradient methods, SmoothGrad (Smilkov et al. 2017; not for
a method that says ``ranking_smoothgrad = False``, such as Integrated Gradients, already an average of many passes).
Baselines: a random map, a centre Gaussian and the image's edges. When the image set gives object masks
(``NAME.mask.png`` beside ``NAME.png``), the mask itself is scored as the reference a perfect map would reach,
and every ranking signal is checked against it: a signal that cannot tell the mask from a random map is not
used to rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import captioned_grid, figure_png, heatmap
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Param, Result, Technique, headline, validate_params
from viz_server_plugins.toolkit import faithfulness, localization, ranking, road, sanity, stability
from viz_server_plugins.toolkit.attribution import TARGET_PARAMS, AttributionTechnique, class_attributions
from viz_server_plugins.toolkit.baselines import BASELINES, baseline_maps
from viz_server_plugins.toolkit.degenerate import flat_curves, why_degenerate
from viz_server_plugins.toolkit.objectives import resolved_without_missing


@dataclass
class Candidate:
    label: str
    role: str  # ranking.METHOD | BASELINE | REFERENCE
    maps: Callable[..., np.ndarray]  # (model, images, objective) -> N x H x W
    technique: AttributionTechnique | None = None
    params: dict[str, Any] | None = None


class AttributionRanking(Technique):
    name = "attribution_ranking"
    title = "Attribution method ranking"
    family = "attribution"
    summary = "Which explanation to believe: every class attribution and model-free baselines scored by the sanity check, ROAD, localization and stability."
    suites = ("attribution",)
    expected_cost = 40.0
    params = (
        *TARGET_PARAMS,
        Param("methods", "str", "", "Comma-separated technique names to rank; empty = every installed class attribution."),
        Param(
            "smooth_samples",
            "int",
            16,
            "Also rank each gradient method with SmoothGrad over this many noisy copies (0 = no SmoothGrad variants).",
            minimum=0,
            maximum=64,
        ),
        Param("sanity_images", "int", 2, "Images (from the first) each method's sanity check runs on.", minimum=0, maximum=32),
        Param("sanity_layers", "int", 3, "Weight layers, from the top, randomized one after another in the sanity check.", minimum=1, maximum=20),
        Param("road_steps", "int", 5, "Fractions of pixels removed on the ROAD curves, spread over 10-90 %.", minimum=2, maximum=19),
        Param("sensitivity_samples", "int", 4, "Perturbations per image for max-sensitivity (0 = skip).", minimum=0, maximum=50),
        Param("sensitivity_radius", "float", 0.02, "Max-sensitivity's L-inf radius, as a fraction of the input's value range.", minimum=0.0, maximum=0.5),
    )

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        images = ctx.images.detach().clone()
        objective = ctx.objective(params["target"], params["region"])
        ctx, images, objective, left_out = resolved_without_missing(ctx, images, objective)
        masks = list(ctx.image_masks) or [None] * len(images)
        with_masks = all(mask is not None and mask.any() for mask in masks)
        candidates, skipped = self._candidates(ctx, params, with_masks, images, objective)
        scores, first_maps = [], []
        cascades: dict[tuple[int, str], Any] = {}  # (image index, runs_on) -> the randomized models of its sanity checks
        for step, candidate in enumerate(candidates):
            ctx.progress(step, len(candidates), f"scoring {candidate.label}")
            started = time.perf_counter()
            try:
                maps = np.asarray(candidate.maps(model, images, objective), np.float32)
            except UserError as refusal:  # a method that does not apply to this model (e.g. Grad-CAM without a spatial layer)
                skipped.append(f"{candidate.label} was not ranked: {refusal}")
                continue
            seconds = (time.perf_counter() - started) / max(len(images), 1)
            scores.append(self._score(ctx, candidate, maps, images, objective, params, masks if with_masks else None, cascades))
            if candidate.role == ranking.METHOD:
                scores[-1].seconds = seconds
            first_maps.append(maps[0])
        still = ranking.judge_only_moving_images(scores)
        if still:
            names = ", ".join(ctx.image_names[index] if index < len(ctx.image_names) else f"image {index}" for index in still)
            skipped.append(
                f"On {len(still)} of {len(images)} images ({names}) the target did not move whichever pixels were removed, so ROAD cannot judge any map there; they are left out of the gaps."
            )
        ordered = ranking.order(scores)
        sentences = ranking.verdict(scores)
        result = Result(
            artifacts=[
                Artifact(
                    "ranking.csv", "attribution methods and model-free baselines, scored on these images", kind="table", rows=ranking.table(ordered, with_masks)
                ),
                Artifact("ranking.png", "ROAD gap (LeRF - MoRF, higher is more faithful) by method", kind="plot", data=_gap_plot(ordered), array="road_gap"),
                Artifact(
                    "maps.png",
                    f"every map for the first image ({ctx.image_names[0] if ctx.image_names else 'image 0'})",
                    kind="plot",
                    data=_map_grid([item.label for item in scores], first_maps, ctx.display_images()[0]),
                    array="first_maps",
                ),
            ],
            arrays={
                "first_maps": np.stack(first_maps),
                "road_gap": np.stack([item.road_gap for item in ordered]),
                "road_fractions": _fractions(params),
            },
            metrics={
                "task": model.spec.task,
                "targets": objective.captions(),
                "verdict": sentences,
                "recommended": ranking.recommendation(scores, sentences)[0],
                "metric_checks": ranking.metric_checks(scores),
                "ranking": [item.to_json() for item in ordered],
                "masks": with_masks,
                "headline": {"recommended_explanation": headline(*_recommendation(scores, sentences, len(images) - len(still)))},
            },
            caveats=[
                *left_out,
                *sentences,
                *skipped,
                "Deletion and insertion curves are shown for comparison only: their constant-filled holes take the image out of the "
                "data the model knows, so the ranking uses ROAD (Rong et al. 2022) instead.",
            ],
        )
        given = sum(mask is not None for mask in masks)
        if not with_masks:
            result.caveats.append(
                f"{given} of {len(masks)} images came with an object mask, so localization was not scored; give NAME.mask.png beside every NAME.png."
            )
        if len(images) < 8:
            result.caveats.append(f"Scores rest on {len(images)} image{'s' if len(images) != 1 else ''}; differences within the ± errors are not evidence.")
        ctx.progress(len(candidates), len(candidates), "ranking done")
        return result

    # ---- candidates ---------------------------------------------------------------------------------
    def _candidates(self, ctx: Context, params: dict, with_masks: bool, images, objective) -> tuple[list[Candidate], list[str]]:
        """The maps to score, each method's choices settled once on these images; and the methods left out, and why."""
        installed = class_attributions(ctx.model.spec.task)
        wanted = [name.strip() for name in params["methods"].split(",") if name.strip()]
        unknown = sorted(set(wanted) - {technique.name for technique in installed})
        if unknown:
            names = ", ".join(technique.name for technique in installed)
            raise UserError(f"{unknown[0]} is not an installed class attribution for this model; choose among {names}.")
        chosen = [technique for technique in installed if (not wanted and technique.fits(ctx.model)) or technique.name in wanted]
        candidates: list[Candidate] = []
        skipped: list[str] = []
        for technique in chosen:
            base = validate_params(
                technique.params,
                {
                    "target": params["target"],
                    "region": params["region"],
                    "sanity_check": False,
                    "faithfulness": False,
                    "smooth_samples": 0,
                    **technique.ranking_params,
                },
            )
            try:
                base, _because = technique.settled_params(ctx.model, images, objective, base)
            except UserError as refusal:  # e.g. no feature map the target's gradient reaches
                skipped.append(f"{technique.title} was not ranked: {refusal}")
                continue
            label = technique.title + (f" ({technique.ranking_note})" if technique.ranking_note else "")
            variants = [(label, base), *((title, {**base, **overrides}) for title, overrides in technique.ranking_variants)]
            if params["smooth_samples"] and technique.map_kind == "input" and technique.ranking_smoothgrad:
                variants.append((f"{technique.title} + SmoothGrad", {**base, "smooth_samples": params["smooth_samples"]}))
            for title, settings in variants:
                candidates.append(Candidate(title, ranking.METHOD, _method_maps(technique, settings, ctx.seed), technique, settings))
        for name, title in BASELINES.items():
            candidates.append(Candidate(title, ranking.BASELINE, _baseline_maps(name, ctx.seed)))
        if with_masks:
            stacked = np.stack(ctx.image_masks).astype(np.float32)
            candidates.append(Candidate("the object mask (a perfect map)", ranking.REFERENCE, lambda model, images, objective: stacked))
        return candidates, skipped

    # ---- scores -------------------------------------------------------------------------------------
    def _score(self, ctx, candidate: Candidate, maps, images, objective, params, masks, cascades) -> ranking.Scores:
        model = ctx.model
        usable = np.array([why_degenerate(values) is None for values in maps])
        curves = road.road(model, images, objective, maps, _fractions(params), seed=ctx.seed)
        classic = faithfulness.deletion_insertion(model, images, objective, maps, steps=8)
        scores = ranking.Scores(
            candidate.label,
            candidate.role,
            curves.gap,
            curves.morf,
            curves.lerf,
            *(np.where(flat_curves(curve), np.nan, np.trapezoid(curve, classic.fractions, axis=1)) for curve in (classic.deletion, classic.insertion)),
            usable,
        )
        if masks is not None:
            scores.pointing = np.array([localization.pointing_game(values, mask) for values, mask in zip(maps, masks)])
            scores.energy_ratio = np.array([localization.energy_in_mask(values, mask) / mask.mean() for values, mask in zip(maps, masks)])
        if candidate.role != ranking.METHOD:
            return scores
        settings = {**candidate.params, "sanity_layers": params["sanity_layers"]}
        count = min(len(images), max(1, params["sanity_images"]))
        checked, chosen = images[:count], objective.take(range(count))
        # SmoothGrad's noise depends on the batch: its reference maps are made on the sub-batch the checks use
        reference = np.asarray(
            maps[:count] if not settings.get("smooth_samples") or count == len(images) else candidate.maps(model, checked, chosen), np.float32
        )
        if params["sanity_images"]:
            # every method that reads the model the same way meets the same randomized models
            own = [cascades.setdefault((index, candidate.technique.runs_on), candidate.technique.sanity_cascade(ctx.seed)) for index in range(count)]
            scores.sanity = sanity.cascade_passes(candidate.technique, model, checked, chosen, settings, reference, own, ctx.seed, ctx.check_cancelled)
        # stability on the same sub-batch
        reference = reference.astype(np.float64)
        scores.invariance = float(stability.input_invariance(candidate.maps, model, checked, chosen, reference).max())
        if params["sensitivity_samples"]:
            noise = stability.uniform_noise(model, checked, params["sensitivity_samples"], params["sensitivity_radius"], ctx.seed)
            scores.sensitivity = float(stability.max_sensitivity(candidate.maps, model, checked, chosen, noise, reference).mean())
        return scores


def _recommendation(scores, sentences: list[str], pictures: int) -> tuple:
    """(value, label, better, note) of the recommended explanation, the ranking's qualifiers in its note."""
    value, qualifier = ranking.recommendation(scores, sentences)
    return value, f"the explanation method to believe (on {pictures} picture{'s' if pictures != 1 else ''})", None, qualifier


def _fractions(params: dict) -> np.ndarray:
    return np.linspace(0.1, 0.9, params["road_steps"])


def _method_maps(technique: AttributionTechnique, settings: dict, seed: int):
    def maps(model, images, objective):
        return technique.maps(model, images, objective, settings, seed)

    return maps


def _baseline_maps(name: str, seed: int):
    def maps(model, images, objective):
        return baseline_maps(name, model.spec.model_to_unit(images.detach().cpu().numpy()), seed)

    return maps


# ---- pictures -----------------------------------------------------------------------------------------
STATUS_COLOURS = {"passed": "#2a7d3f", "FAILED": "#b3261e", "undecided": "#c77c02", "cannot judge": "#8a8a8a", "n/a": "#4a6fa5"}


def _gap_plot(ordered: list[ranking.Scores]) -> bytes:
    pyplot = plotting()
    labels = [item.label for item in ordered]
    means = [item.gap()[0] for item in ordered]
    intervals = [item.interval("gap") or (mean, mean) for item, mean in zip(ordered, means)]
    errors = np.array([[mean - low for mean, (low, _high) in zip(means, intervals)], [high - mean for mean, (_low, high) in zip(means, intervals)]])
    colours = [STATUS_COLOURS[item.sanity_status] if item.role != ranking.REFERENCE else "#c9a227" for item in ordered]
    figure, axis = pyplot.subplots(figsize=(6.4, 0.32 * len(labels) + 1.2), dpi=100)
    positions = np.arange(len(labels))[::-1]
    axis.barh(positions, np.nan_to_num(means), xerr=np.nan_to_num(errors), color=colours)
    axis.set_yticks(positions, labels, fontsize=8)
    axis.axvline(0, color="#333", linewidth=0.8)
    axis.set_xlabel("ROAD gap: LeRF - MoRF, with its 95% interval over pictures (higher is more faithful)")
    handles = [pyplot.Rectangle((0, 0), 1, 1, color=colour) for colour in (*STATUS_COLOURS.values(), "#c9a227")]
    names = ["sanity passed", "sanity FAILED", "sanity undecided (too few pictures)", "cannot judge", "model-free baseline", "object mask"]
    axis.legend(handles, names, fontsize=7, loc="lower right")
    return figure_png(figure)


def _map_grid(labels: list[str], maps: list[np.ndarray], picture: np.ndarray) -> bytes:
    return captioned_grid([(picture, "image"), *((heatmap(values), label) for label, values in zip(labels, maps))])


@hookimpl
def register_techniques():
    return [AttributionRanking()]
