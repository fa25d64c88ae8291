"""The small base class of the class-attribution techniques (in the style of pytorch-grad-cam's BaseCAM).

A subclass sets its names and ``attribute(model, images, targets, params)``, which returns either an
attribution shaped like the input (gradient methods; reduced over colour channels here) or one map per image
at input resolution (CAM methods). The base class adds what every map gets:

- SmoothGrad (Smilkov et al. 2017): the mean attribution over noisy copies of the input, as an option;
- a mask and bounding box from the map (weakly supervised localization), see ``localization``;
- the model-parameter randomization test (Adebayo et al. 2018), see ``sanity``;
- deletion and insertion curves (Petsiuk et al. 2018), see ``faithfulness``.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch

from viz_server.errors import UserError
from viz_server.objectives import Objective
from viz_server.rendering import input_artifact, map_artifacts, overlay, png_bytes, render_each
from viz_server.techniques import TARGET, Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import faithfulness, localization, sanity
from viz_server_plugins.toolkit.degenerate import degenerate_caveat, why_degenerate
from viz_server_plugins.toolkit.gradients import REDUCE, class_gradient
from viz_server_plugins.toolkit.objectives import resolved_without_missing
from viz_server_plugins.toolkit.relu_rules import RULE_UNITS, relu_rule, rule_caveat

TARGET_PARAMS = (
    TARGET,
    Param(
        "region",
        "str",
        "",
        "Dense outputs (segmenters): explain the class summed over ROW0:ROW1,COL0:COL1 of the output grid, or over "
        "mask (where the model predicts that class); empty = everywhere.",
    ),
)
SMOOTH_PARAMS = (
    Param("smooth_samples", "int", 0, "SmoothGrad: average over this many noisy copies of each image (0 = off).", minimum=0, maximum=200),
    Param("smooth_noise", "float", 0.15, "SmoothGrad noise level, as a fraction of the input's value range.", minimum=0.0, maximum=1.0),
    Param("smooth_batch", "int", 16, "SmoothGrad: noisy copies evaluated per pass (memory vs speed).", minimum=1, maximum=256),
)
TRUST_PARAMS = (
    Param(
        "segmentation",
        "choice",
        "threshold",
        "Mask from the map: threshold + connected component, or refined by GrabCut (needs OpenCV).",
        choices=("threshold", "grabcut"),
    ),
    Param("sanity_check", "bool", True, "Model-parameter randomization test on the first image (Adebayo et al. 2018)."),
    Param("sanity_layers", "int", 3, "How many weight layers, from the top, to randomize one after another.", minimum=1, maximum=20),
    Param("faithfulness", "bool", True, "Deletion and insertion curves with their area under the curve (Petsiuk et al. 2018)."),
    Param("faithfulness_steps", "int", 8, "Steps on the deletion and insertion curves (each costs two forward passes per image).", minimum=4, maximum=100),
)


class AttributionTechnique(Technique):
    family = "attribution"
    inputs = ("image",)
    extra_params: tuple[Param, ...] = ()
    map_kind = "input"  # "input": shaped like the input; "map": N x H x W already
    caveats: tuple[str, ...] = ()
    ranking_variants: tuple[tuple[str, dict], ...] = ()
    """(title, params) of variants the method ranking scores beside the defaults, e.g. Grad-CAM++ for Grad-CAM."""
    ranking_params: dict = {}
    """Params the method ranking runs this method with instead of its defaults, to bound its cost there (a forward-
    pass method's mask count); ``ranking_note`` names them in the ranking's table."""
    ranking_note: str = ""
    ranking_smoothgrad: bool = True
    """Whether the method ranking also scores this method under SmoothGrad (when its map is shaped like the input).
    A method that already averages many gradient passes per map (Integrated Gradients) says False: SmoothGrad
    would multiply that cost by its sample count for a variant nobody publishes."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.params = TARGET_PARAMS + cls.extra_params + SMOOTH_PARAMS + TRUST_PARAMS

    @abstractmethod
    def attribute(self, model, images: torch.Tensor, objective: Objective, params: dict) -> torch.Tensor:
        """Attribution of ``objective`` (``viz_server.objectives``: one differentiable scalar per image, e.g.
        ``objective.total(model.module(x))``) for ``images`` in model space."""

    def fits(self, model) -> bool:
        """Whether the method applies to this kind of network at all (a transformer's attention methods do not to a
        CNN): the method ranking leaves out, without a word, those that do not."""
        return True

    def outputs(self, model, images: torch.Tensor) -> torch.Tensor:
        """The model's outputs for ``images``, as this method reads the model (the torch graph here)."""
        return model.module(images)

    def sanity_cascade(self, seed: int):
        """The randomized models of this method's sanity check (``sanity.RandomizedCascade``: the torch graph's weights)."""
        return sanity.RandomizedCascade(seed)

    def caveats_for(self, params: dict) -> list[str]:
        """The caveats that hold for these parameters (by default ``caveats``, whatever the parameters)."""
        return list(self.caveats)

    def settled_params(self, model, images: torch.Tensor, objective: Objective, params: dict) -> tuple[dict, list[str]]:
        """``params`` with every choice that depends on the model and the images made once (e.g. a default layer,
        ``toolkit.cam.settle_layer``), so that the sanity check and every later map use the same; and sentences
        saying what was chosen and why. By default nothing to settle."""
        return params, []

    # ---- maps ------------------------------------------------------------------------------------
    def maps(self, model, images: torch.Tensor, objective: Objective, params: dict, seed: int = 0) -> np.ndarray:
        """N x H x W non-negative maps at input resolution (SmoothGrad applied when asked)."""
        raw = smoothed(self.attribute, model, images, objective, params, seed)
        return self.to_map(raw, model, params)

    def to_map(self, raw: torch.Tensor, model, params: dict) -> np.ndarray:
        if self.map_kind == "map":
            return raw.detach().cpu().numpy()
        axis = 1 if model.spec.layout == "NCHW" else 3
        magnitude = raw.detach().abs()
        reduced = magnitude.sum(axis) if params.get("reduce") == "sum" else magnitude.amax(axis)
        return reduced.cpu().numpy()

    # ---- the run ----------------------------------------------------------------------------------
    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        if ctx.images is None:
            raise UserError(f"{self.title} explains images; give at least one.")
        images = ctx.images.detach().clone()
        steps = 1 + int(params["sanity_check"]) + int(params["faithfulness"])
        ctx.progress(0, steps, "attribution")
        objective = ctx.objective(params["target"], params["region"])
        left_out: list[str] = []
        if objective.can_miss:  # an image without the target is left out, with a caveat
            ctx, images, objective, left_out = resolved_without_missing(ctx, images, objective)
        params, settled = self.settled_params(model, images, objective, params)
        if params["smooth_samples"]:  # the noisy copies explain the clean image's targets: choose them first
            with torch.inference_mode():
                objective.resolve(self.outputs(model, images))
            raw = smoothed(self.attribute, model, images, objective, params, ctx.seed)
        else:  # one forward and one backward: the objective chooses on the attribution's own forward
            raw = self.attribute(model, images, objective, params)
        if objective.seen is None:
            raise RuntimeError(f"{type(self).__name__}.attribute never evaluated its objective")
        outputs = objective.seen.cpu().numpy()
        maps = self.to_map(raw, model, params)
        explained = objective.captions()
        what = f"{self.title.lower()}{' with SmoothGrad' if params['smooth_samples'] else ''}"
        result = Result(
            artifacts=map_artifacts(ctx, maps, self.name, what, explained),
            arrays={self.name: maps.astype(np.float32), "attribution": raw.detach().cpu().numpy(), "outputs": outputs},
            metrics={
                "task": model.spec.task,
                "targets": explained,
                "target_probability": [round(float(p), 6) for p in objective.probability(outputs, objective.choices or [])],
                "target_measure": objective.measure,
                "predicted": objective.predicted(outputs),
                "objective": objective.to_json()["details"],
            },
            caveats=[*left_out, *settled, *self.caveats_for(params)],
        )
        if params.get("layer"):
            result.metrics["layer"] = params["layer"]
        self._draw_targets(ctx, objective, result)
        usable = self._name_degenerate_maps(ctx, maps, what, result)
        self._localize(ctx, maps, result, params["segmentation"])
        done = 1
        ctx.progress(done, steps, "attribution done")
        if params["sanity_check"]:
            first = objective.take([0])
            # compare with the map of the same one-image batch the randomized maps use (SmoothGrad's noise depends on the batch)
            reference = maps[:1] if not params["smooth_samples"] or len(images) == 1 else self.maps(model, images[:1], first, params, ctx.seed)
            check = sanity.cascading_randomization(
                self, model, images[:1], first, params, reference, ctx.seed, ctx.check_cancelled, cascade=self.sanity_cascade(ctx.seed)
            )
            result.metrics["sanity_check"] = check.to_json()
            result.caveats.insert(0, check.verdict)
            result.artifacts.append(
                Artifact(
                    "sanity_check.png",
                    "map after cascading randomization of the top layers (first image)",
                    kind="plot",
                    data=check.plot(),
                    array="sanity_maps",
                    group="checks",
                )
            )
            result.arrays["sanity_maps"] = check.maps
            done += 1
            ctx.progress(done, steps, "sanity check done")
        if params["faithfulness"]:
            curves = faithfulness.deletion_insertion(model, images, objective, maps, params["faithfulness_steps"])
            result.metrics.update(curves.metrics(usable))
            still = [index for index, flat in enumerate(result.metrics["flat_curves"]) if flat]
            if still:
                result.caveats.append(
                    f"On {len(still)} of {len(maps)} images the {objective.measure} did not move as pixels were deleted or inserted, so their "
                    "curves cannot judge the map; their areas are withheld."
                )
            result.arrays["deletion_curve"] = curves.deletion
            result.arrays["insertion_curve"] = curves.insertion
            result.artifacts.append(
                Artifact(
                    "faithfulness.png",
                    f"deletion and insertion curves ({objective.measure})",
                    kind="plot",
                    data=curves.plot(objective.measure, usable),
                    array="deletion_curve",
                    group="checks",
                )
            )
            ctx.progress(steps, steps, "faithfulness done")
        return result

    def _draw_targets(self, ctx: Context, objective, result: Result) -> None:
        """When the target is something drawable (a detection's box), show it on each image."""
        pictures = ctx.display_images()
        for index, choice in enumerate(objective.choices or []):
            drawn = objective.overlay(pictures[index], choice)
            if drawn is not None:
                group = result.artifact(input_artifact(index)).group
                result.artifacts.append(
                    Artifact(f"target_{index}.png", f"what is explained: {objective.describe(choice)}", data=png_bytes(drawn, 128), array="inputs", group=group)
                )

    def _name_degenerate_maps(self, ctx: Context, maps: np.ndarray, what: str, result: Result) -> list[bool]:
        """A caveat for every map that cannot support a conclusion; returns which maps are usable."""
        usable = []
        for index, values in enumerate(maps):
            reason = why_degenerate(values)
            usable.append(reason is None)
            if reason is not None:
                name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
                result.caveats.insert(0, degenerate_caveat(what, index, name, reason))
        result.metrics["usable_maps"] = usable
        return usable

    def _localize(self, ctx: Context, maps: np.ndarray, result: Result, segmentation: str) -> None:
        pictures = ctx.display_images()

        def localize(index: int):
            mask = localization.mask_from_map(maps[index])
            if segmentation == "grabcut":
                mask = localization.refine_with_grabcut(pictures[index], mask)
            box = localization.bounding_box(mask)
            outlined = localization.draw_box(overlay(pictures[index], mask.astype(np.float32)), box)
            return mask, box, png_bytes(outlined, 128)

        localized = render_each(localize, range(len(maps)))
        for index, (_mask, _box, picture) in enumerate(localized):
            result.artifacts.append(
                Artifact(
                    f"{self.name}_mask_{index}.png",
                    "segmentation from the map with its bounding box",
                    data=picture,
                    array="masks",
                    group=result.artifact(input_artifact(index)).group,
                )
            )
        result.arrays["masks"] = np.stack([mask for mask, _box, _picture in localized])
        result.metrics["boxes"] = [list(box) if box else None for _mask, box, _picture in localized]


class RuleAttribution(AttributionTechnique):
    """A class attribution that back-propagates the class score through ``rule`` (``"guided"`` or
    ``"deconvnet"``): subclasses set ``rule`` and their names; the caveat says where the rule was applied."""

    rule: str = "guided"
    extra_params = (REDUCE, RULE_UNITS)

    def attribute(self, model, images, objective, params):
        with relu_rule(model, self.rule, params.get("rule_units", "rectifiers")):
            return class_gradient(model, images, objective)

    def run(self, ctx, params):
        result = super().run(ctx, params)
        result.caveats.append(rule_caveat(ctx.model, self.rule, params["rule_units"]))
        return result


def class_attributions(task: str | None = None) -> list[AttributionTechnique]:
    """The installed class attributions (every plugin's, built-in or not) that apply to ``task``."""
    from viz_server.installed import techniques

    return [technique for technique in techniques().values() if isinstance(technique, AttributionTechnique) and (task is None or technique.supports(task))]


def smoothed(attribute, model, images: torch.Tensor, objective: Objective | None, params: dict, seed: int) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): mean attribution over Gaussian-noised copies of each image."""
    samples = params.get("smooth_samples", 0)
    if not samples:
        return attribute(model, images, objective, params)
    low, high = model.spec.unit_bounds()
    spread = torch.from_numpy(np.abs(high - low)).to(images)  # the value range of every input element
    generator = torch.Generator(device="cpu").manual_seed(seed)
    chunk = max(1, params.get("smooth_batch", 16) // max(len(images), 1))
    total = None
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        noisy = images.repeat(count, *[1] * (images.dim() - 1))
        noise = torch.randn(noisy.shape, generator=generator).to(images) * params["smooth_noise"] * spread
        part = attribute(model, noisy + noise, objective.repeat(count) if objective is not None else None, params)
        part = part.reshape(count, len(images), *part.shape[1:]).sum(0)
        total = part if total is None else total + part
    return total / samples
