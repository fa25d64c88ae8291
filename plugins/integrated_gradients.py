"""Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks").

The attribution of each input element is its difference from a baseline picture times the gradient of the
target's score averaged along the straight path from the baseline to the image (Gauss-Legendre quadrature, as
Captum's default). The attributions then add up to the score's change from the baseline to the image
("completeness"); the result reports how far they miss it, and says so when the miss exceeds 5%.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.techniques import Param
from viz_server_plugins.toolkit.attribution import AttributionTechnique
from viz_server_plugins.toolkit.gradients import REDUCE
from viz_server_plugins.toolkit.perturbation import fill

COMPLETENESS_GAP = 0.05
"""Relative miss of completeness above which the result says the path was integrated too coarsely."""


class IntegratedGradients(AttributionTechnique):
    name = "integrated_gradients"
    title = "Integrated Gradients"
    summary = "Gradients averaged along the path from a baseline picture to the image, times their difference; they add up to the score's change."
    expected_cost = 3.0
    ranking_smoothgrad = False  # 16 noisy copies of a whole path per map (512 passes at the default 32 steps), a variant nobody publishes
    ranking_params = {"steps": 16}  # the ranking scores every method on every image: a bounded cost there
    ranking_note = "16 steps"
    extra_params = (
        REDUCE,
        Param("steps", "int", 32, "Points on the path from the baseline to the image (Gauss-Legendre).", minimum=2, maximum=512),
        Param(
            "baseline",
            "choice",
            "black",
            "The picture the path starts from: black, zero in model space (Captum's default), a blurred copy, or uniform noise.",
            choices=("black", "zero", "blurred", "noise"),
        ),
        Param("internal_batch", "int", 32, "Path points (times images) per backward pass: memory against speed.", minimum=1, maximum=1024),
    )

    def baselines(self, model, images: torch.Tensor, params: dict) -> torch.Tensor:
        pictures = images.detach().cpu().numpy()
        return torch.from_numpy(np.stack([fill(picture, params["baseline"], model) for picture in pictures])).to(images)

    def attribute(self, model, images, objective, params):
        start = self.baselines(model, images, params)
        with torch.inference_mode():
            objective.resolve(model.module(images))  # the targets are chosen on the image, not on the path
        nodes, weights = np.polynomial.legendre.leggauss(params["steps"])
        alphas, weights = (nodes + 1) / 2, weights / 2
        shape = (1,) * (images.dim() - 1)
        per_pass = max(1, params["internal_batch"] // max(1, len(images)))
        total = torch.zeros_like(images)
        for first in range(0, len(alphas), per_pass):
            chosen = torch.tensor(alphas[first : first + per_pass], dtype=images.dtype, device=images.device)
            path = (start[None] + chosen.view(-1, 1, *shape) * (images - start)[None]).reshape(-1, *images.shape[1:]).detach().requires_grad_(True)
            with torch.enable_grad():
                (gradient,) = torch.autograd.grad(objective.repeat(len(chosen)).total(model.module(path)), path)
            step = torch.tensor(weights[first : first + per_pass], dtype=images.dtype, device=images.device)
            total += (gradient.reshape(len(chosen), *images.shape) * step.view(-1, 1, *shape)).sum(0)
        return (images - start) * total

    def run(self, ctx, params):
        result = super().run(ctx, params)
        if params["smooth_samples"]:
            return result  # SmoothGrad averages over noisy images: there is no one score change to add up to
        images = ctx.images.detach()
        objective = ctx.objective(params["target"], params["region"])
        with torch.inference_mode():
            objective.resolve(ctx.model.module(images), allow_missing=True)
            change = (objective.score(ctx.model.module(images)) - objective.score(ctx.model.module(self.baselines(ctx.model, images, params)))).cpu().numpy()
        attribution = result.arrays["attribution"]
        if len(attribution) != len(change):
            return result  # images without the target were left out; the sums would not pair up
        sums = attribution.reshape(len(attribution), -1).sum(1)
        gaps = np.abs(sums - change) / np.maximum(np.abs(change), 1e-12)
        result.metrics["completeness"] = {"attribution_sum": sums.tolist(), "score_change": change.tolist(), "relative_gap": gaps.tolist()}
        worst = float(gaps.max())
        if worst > COMPLETENESS_GAP:
            result.caveats.insert(
                0,
                f"The attributions miss the score's change from the baseline by up to {worst:.0%} (completeness; 5% is the limit here): "
                f"the path is integrated too coarsely for this model, so raise steps above {params['steps']}.",
            )
        return result


@hookimpl
def register_techniques():
    return [IntegratedGradients()]
