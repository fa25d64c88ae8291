"""Feature inversion (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them"):
reconstruct an image from its activations at one layer with a content loss alone (plus total variation),
to show what the layer keeps and what it throws away."""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import layer_output, layer_param, spatial_layer
from viz_server_plugins.toolkit.optimization import OPTIMIZATION_PARAMS, display, optimize, total_variation, trajectory_result

PARAMS = tuple(p for p in OPTIMIZATION_PARAMS if p.name not in ("l2_decay", "clip_norm_percentile", "clip_contribution_percentile"))


class FeatureInversion(Technique):
    name = "feature_inversion"
    title = "Feature inversion"
    family = "optimization"
    summary = "An image rebuilt from one layer's activations alone: what the layer keeps (Mahendran & Vedaldi 2015)."
    params = (
        layer_param("Layer whose activations are matched"),
        Param("tv_weight", "float", 0.05, "Total-variation regularization weight.", minimum=0.0, maximum=100.0),
    ) + PARAMS
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        layer = spatial_layer(model, params["layer"]) if not params["layer"] else model.layer(params["layer"]).name
        settings = {**params, "l2_decay": 0.0, "clip_norm_percentile": 0.0, "clip_contribution_percentile": 0.0}
        combined = Result(
            caveats=[
                "What the reconstruction lacks, the layer has discarded (or the optimizer did not find); "
                "deeper layers keep less of the image's detail and more of what matters for the class."
            ],
            metrics={"layer": layer, "relative_content_loss": []},
        )
        for index in range(len(ctx.images)):
            name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
            trajectory = self._invert(ctx, ctx.images[index : index + 1], layer, settings)
            result = trajectory_result(ctx, trajectory, f"inversion_{index}", f"{name} rebuilt from the activations of {layer}")
            original = model.spec.model_to_unit(ctx.images[index : index + 1].numpy())[0]
            combined.artifacts.append(
                Artifact(
                    f"original_{index}.png",
                    f"{name}, the original",
                    array="inputs",
                    group=f"{index}: {name}",
                    data=png_bytes(display(model.spec, original), 224),
                )
            )
            for artifact in result.artifacts:
                artifact.group = f"{index}: {name}" if artifact.group == "result" else f"{index}: {name} · frames"
                artifact.name = artifact.name if artifact.name.startswith("inversion_") else f"{index}_{artifact.name}"
                artifact.array = f"{index}_{artifact.array}" if artifact.array in ("objective", "frames") else artifact.array
                combined.artifacts.append(artifact)
            for key, array in result.arrays.items():
                combined.arrays[key if key.startswith("inversion_") else f"{index}_{key}"] = array
            combined.metrics["relative_content_loss"].append(round(-trajectory.objective[-1], 6))
        return combined

    @staticmethod
    def _invert(ctx: Context, image: torch.Tensor, layer: str, settings: dict):
        model = ctx.model
        target = layer_output(model, image, layer)
        scale = target.pow(2).sum().clamp(min=1e-12)
        extract = model.feature_extractor([layer])  # the graph stops at the layer

        def objective(batch: torch.Tensor) -> torch.Tensor:
            return -(extract(batch)[layer] - target).pow(2).sum() / scale  # maximize = minimize the relative content loss

        return optimize(ctx, objective, settings, regularize=lambda unit: settings["tv_weight"] * total_variation(unit))


@hookimpl
def register_techniques():
    return [FeatureInversion()]
