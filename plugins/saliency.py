"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks").

The map is |d score_c / d x|: the gradient of the target class's pre-softmax score with respect to the
input pixels, in absolute value, reduced over the colour channels (max, as in the paper, or sum).
"""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.rendering import map_artifacts
from viz_server.techniques import TARGET, Context, Param, Result, Technique


class Saliency(Technique):
    name = "saliency"
    title = "Gradient saliency"
    family = "attribution"
    summary = "Which pixels the class score is most sensitive to: |d score / d pixel| (Simonyan et al. 2014)."
    version = "1"
    params = (
        TARGET,
        Param("reduce", "choice", "max", "How to merge colour channels: max (as in the paper) or sum.", choices=("max", "sum")),
    )
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        images = ctx.images.detach().clone().to(ctx.device).requires_grad_(True)
        scores = ctx.model.module(images)
        targets = ctx.resolve_targets(params["target"], scores.detach())
        ctx.progress(1, 2, "forward pass done")
        selected = scores.gather(1, targets[:, None]).sum()
        (gradients,) = torch.autograd.grad(selected, images)
        magnitude = gradients.abs()
        maps = magnitude.amax(ctx.channel_axis) if params["reduce"] == "max" else magnitude.sum(ctx.channel_axis)
        ctx.progress(2, 2, "gradients done")

        maps_np = maps.detach().cpu().numpy()
        target_list = targets.tolist()
        probabilities = torch.softmax(scores.detach(), dim=1)
        return Result(
            artifacts=map_artifacts(ctx, maps_np, "saliency", "gradient saliency", target_list),
            arrays={
                "saliency": maps_np,
                "gradients": gradients.detach().cpu().numpy(),
                "targets": targets.cpu().numpy(),
                "scores": scores.detach().cpu().numpy(),
            },
            metrics={
                "targets": [ctx.model.spec.label(t) for t in target_list],
                "target_probability": [round(float(probabilities[i, t]), 6) for i, t in enumerate(target_list)],
                "predicted": [ctx.model.spec.label(int(i)) for i in scores.argmax(1).tolist()],
            },
            caveats=[
                "Saliency shows sensitivity, not evidence: a bright pixel is one whose small change moves the score "
                "most, which is not the same as a pixel the model relies on.",
                "Raw gradients are noisy and often highlight edges regardless of the model; compare with the "
                "sanity check and with Grad-CAM before drawing conclusions.",
            ],
        )


@hookimpl
def register_techniques():
    return [Saliency()]
