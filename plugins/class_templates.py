"""Class templates (lecture notes, "Visualization of Neural Networks"): when a fully connected layer reads the
image directly (linear classifiers, an MLP's first layer), each unit's weights reshape to the image's shape;
normalized to 0-255 they show the template the unit matches."""

from __future__ import annotations

import numpy as np

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import layer_weights
from viz_server_plugins.toolkit.pictures import grid, scale


def first_linear_reading_input(model):
    """The first Gemm/MatMul layer, if only shape ops (Flatten, Reshape ...) lie between it and the input."""
    for layer in model.layers:
        if layer.kind == "linear":
            return layer
        if layer.kind not in ("shape",):
            return None
    return None


class ClassTemplates(Technique):
    name = "class_templates"
    title = "Class templates"
    family = "network"
    summary = "A linear layer that reads the image, its weights reshaped into one picture per class or unit."
    params = (
        Param("normalize", "choice", "per_unit", "Scale each template on its own or all on one scale.", choices=("per_unit", "global")),
        Param("max_units", "int", 64, "Most templates shown.", minimum=1, maximum=1024),
    )
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model, spec = ctx.model, ctx.model.spec
        ctx.progress(0, 1, "reading the weights")
        layer = first_linear_reading_input(model)
        if layer is None or not layer.weight:
            raise UserError(
                "no fully connected layer reads this model's image directly; class templates need a linear "
                "classifier or an MLP (use the filters technique for conv layers)."
            )
        weights = layer_weights(model, layer)
        pixels = spec.channels * spec.height * spec.width
        if weights.shape[0] == pixels:
            weights = weights.T  # MatMul / Gemm without transB: inputs x units
        if weights.ndim != 2 or weights.shape[1] != pixels:
            raise UserError(f"layer '{layer.name}' has weights of shape {list(weights.shape)}, which do not reshape to the image.")
        shape = (spec.channels, spec.height, spec.width) if spec.layout == "NCHW" else (spec.height, spec.width, spec.channels)
        templates = weights.reshape(len(weights), *shape)[: params["max_units"]]
        if spec.layout == "NCHW":
            templates = templates.transpose(0, 2, 3, 1)
        low, high = (float(templates.min()), float(templates.max())) if params["normalize"] == "global" else (None, None)
        pictures = [scale(t if t.shape[2] != 1 else t[..., 0], low, high) for t in templates]
        names = (
            [spec.label(i) for i in range(len(pictures))]
            if layer.output_shape and layer.output_shape[-1] == spec.num_classes
            else [str(i) for i in range(len(pictures))]
        )
        artifacts = [
            Artifact(
                "templates.png",
                f"weights of {layer.name}, one template per unit ({params['normalize'].replace('_', ' ')} scaling)",
                data=png_bytes(grid(pictures, min(10, len(pictures))), 256),
                array="templates",
                group="templates",
            )
        ]
        artifacts += [
            Artifact(f"template_{i}.png", f"template for {name}", data=png_bytes(picture, 96), array="templates", group="one per unit")
            for i, (picture, name) in enumerate(zip(pictures, names))
        ]
        return Result(
            artifacts=artifacts,
            arrays={"templates": templates.astype(np.float32)},
            metrics={"layer": layer.name, "units": len(pictures)},
            caveats=["A template is what the unit's score is linear in; bright pixels raise the score, dark ones lower it."],
        )


@hookimpl
def register_techniques():
    return [ClassTemplates()]
