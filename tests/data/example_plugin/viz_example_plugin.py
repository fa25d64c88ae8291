"""Gradient x input (Shrikumar et al. 2016) - written exactly as a third-party author would."""

import torch

from viz_server import hookimpl
from viz_server.rendering import map_artifacts
from viz_server.techniques import TARGET, Param, Result, Technique


class GradientTimesInput(Technique):
    name = "gradient_x_input"
    title = "Gradient x input"
    family = "attribution"
    summary = "Input times its gradient, summed over channels (Shrikumar et al. 2016)."
    version = "0.3.0"
    params = (TARGET, Param("absolute", "bool", True, "Show magnitudes instead of signed values."))

    def run(self, ctx, params):
        images = ctx.images.clone().requires_grad_(True)
        scores = ctx.model.module(images)
        targets = ctx.resolve_targets(params["target"], scores.detach())
        (grad,) = torch.autograd.grad(scores.gather(1, targets[:, None]).sum(), images)
        ctx.progress(1, 1, "gradient done")
        maps = (grad * images).sum(ctx.channel_axis)
        maps = maps.abs() if params["absolute"] else maps.clamp(min=0)
        maps = maps.detach().numpy()
        return Result(
            artifacts=map_artifacts(ctx, maps, "gxi", "gradient x input", [f"class {ctx.model.spec.label(t)}" for t in targets.tolist()]),
            arrays={"gxi": maps},
            metrics={"mean": float(maps.mean())},
            caveats=["Gradient x input depends on the input's baseline of zero."],
        )


@hookimpl
def register_techniques():
    return [GradientTimesInput()]
