"""Class model visualization (Simonyan, Vedaldi & Zisserman 2014; regularizers of Yosinski et al. 2015):
an image, made from scratch by gradient ascent, that maximizes one class's pre-softmax score."""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.techniques import Context, Param, Result, Technique
from viz_server_plugins.toolkit.objectives import class_scores
from viz_server_plugins.toolkit.optimization import OPTIMIZATION_PARAMS, optimize, to_model_space, trajectory_result


class ClassVisualization(Technique):
    name = "class_visualization"
    title = "Class model visualization"
    family = "optimization"
    tasks = ("classification", "dense")
    summary = "An image optimized from scratch to maximize one class's pre-softmax score (Simonyan et al. 2014)."
    params = (Param("target", "target", "0", "Class to visualize: an output index or a label name."),) + OPTIMIZATION_PARAMS
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        target = model.spec.class_index(params["target"])

        def objective(batch: torch.Tensor) -> torch.Tensor:
            return class_scores(model.module(batch))[0, target]

        trajectory = optimize(ctx, objective, params)
        label = model.spec.label(target)
        result = trajectory_result(ctx, trajectory, "class_model", f"an image the model scores as {label}")
        with torch.no_grad():
            scores = class_scores(model.module(to_model_space(model.spec, trajectory.image)))
        result.metrics.update(
            {"target": label, "target_probability": round(float(torch.softmax(scores, 1)[0, target]), 6), "predicted": model.spec.label(int(scores.argmax()))}
        )
        result.caveats.append(
            "The image shows what raises the score, not what the training images looked like; without regularizers it is mostly high-frequency noise."
        )
        return result


@hookimpl
def register_techniques():
    return [ClassVisualization()]
