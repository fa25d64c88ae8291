"""Filters (lecture notes, "Visualization of Neural Networks"): a conv layer's kernels as an image grid; the first
layer in colour, deeper layers per input channel or averaged over input channels (the choice is stated in the
result)."""

from __future__ import annotations

import numpy as np

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import FIRST_CONV, layer_param, layer_weights
from viz_server_plugins.toolkit.pictures import grid, scale


class Filters(Technique):
    name = "filters"
    title = "Filters"
    family = "network"
    suites = ("network",)
    summary = "A conv layer's kernels as an image grid: the first layer in colour, deeper layers per input channel or averaged."
    params = (
        layer_param("Conv layer", FIRST_CONV),
        Param("normalize", "choice", "per_filter", "Scale each filter on its own or all on one scale.", choices=("per_filter", "global")),
        Param(
            "deep_mode",
            "choice",
            "average",
            "For kernels with other than 1/3 input channels: average them, or show one input channel.",
            choices=("average", "channel"),
        ),
        Param("input_channel", "int", 0, "With deep_mode=channel: which input channel to show.", minimum=0),
        Param("max_filters", "int", 64, "Most filters shown.", minimum=1, maximum=1024),
    )
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        ctx.progress(0, 1, "reading the weights")
        name = params["layer"] or model.layers.first_conv
        if not name:
            raise UserError("this model has no conv layer with weights; for a linear model use class_templates.")
        layer = model.layer(name)
        if layer.kind != "conv" or not layer.weight:
            raise UserError(f"layer '{name}' is not a conv layer with stored weights; pick one from `viz-server inspect`.")
        kernels = layer_weights(model, layer)[: params["max_filters"]]  # out x in x kh x kw
        colour = kernels.shape[1] == 3 and name == model.layers.first_conv
        if colour:
            tiles = kernels.transpose(0, 2, 3, 1)  # out x kh x kw x 3
            how = "in colour (input channels as RGB)"
        elif kernels.shape[1] == 1:
            tiles, how = kernels[:, 0], "single input channel"
        elif params["deep_mode"] == "average":
            tiles, how = kernels.mean(axis=1), f"averaged over {kernels.shape[1]} input channels"
        else:
            channel = params["input_channel"]
            if channel >= kernels.shape[1]:
                raise UserError(f"input_channel {channel} is out of range: the kernels have {kernels.shape[1]} input channels.")
            tiles, how = kernels[:, channel], f"input channel {channel} of {kernels.shape[1]}"
        low, high = (float(tiles.min()), float(tiles.max())) if params["normalize"] == "global" else (None, None)
        pictures = [scale(tile, low, high) for tile in tiles]
        picture = grid(pictures, min(16, len(pictures)))
        return Result(
            artifacts=[
                Artifact(
                    "filters.png",
                    f"{len(pictures)} filters of {name}, {how}, {params['normalize'].replace('_', ' ')} scaling",
                    data=png_bytes(picture, 320),
                    array="kernels",
                    group="filters",
                )
            ],
            arrays={"kernels": kernels.astype(np.float32)},
            metrics={"layer": name, "filters": len(pictures), "kernel_size": list(kernels.shape[2:]), "shown": how},
            caveats=[
                "Only the first layer's filters act on pixels directly; deeper kernels combine feature maps, so their pictures are hard to read on their own."
            ],
        )


@hookimpl
def register_techniques():
    return [Filters()]
