"""Neuron gradients: the gradient of one unit's activation deep in the network with respect to the input
(plain or guided; see the lecture notes' "Gradient of Activation w.r.t. Input"), plus the image patches that
activate the unit most, cropped to its receptive field (Zeiler & Fergus 2014, fig. 2).

The receptive field is measured, not computed from strides: it is the support of the unit's input gradient.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.rendering import map_artifacts, png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.attribution import SMOOTH_PARAMS, smoothed
from viz_server_plugins.toolkit.gradients import neuron_gradient
from viz_server_plugins.toolkit.layers import grid_output, layer_param, parse_position, spatial_layer
from viz_server_plugins.toolkit.localization import bounding_box


class NeuronGradient(Technique):
    name = "neuron_gradient"
    title = "Neuron gradient"
    family = "attribution"
    summary = "Which input pixels drive one unit deep in the network, and the image patches that excite it most."
    params = (
        layer_param(),
        Param("channel", "int", 0, "Channel of the unit.", minimum=0),
        Param("position", "str", "", "ROW,COLUMN of the unit in the layer's map; empty = the whole channel."),
        Param("mode", "choice", "guided", "Plain gradients or guided backpropagation.", choices=("plain", "guided")),
        Param("top_patches", "int", 8, "How many most-activating image patches to show (from the given images).", minimum=0, maximum=64),
    ) + SMOOTH_PARAMS
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        layer = spatial_layer(model, params["layer"]) if not params["layer"] else model.layer(params["layer"]).name
        position = parse_position(params["position"])
        guided = params["mode"] == "guided"
        images = ctx.images.detach().clone()

        def attribute(model_, batch, _targets, _params):
            return neuron_gradient(model_, batch, layer, params["channel"], position, guided)[0]

        ctx.progress(0, 2, "neuron gradients")
        gradients = smoothed(attribute, model, images, torch.zeros(len(images), dtype=torch.long), params, ctx.seed)
        _, activations = neuron_gradient(model, images, layer, params["channel"], position, False)
        axis = ctx.channel_axis
        maps = gradients.abs().amax(axis).numpy()
        where = f"({position[0]},{position[1]})" if position else "(whole channel)"
        subject = f"channel {params['channel']} {where} of {layer}"
        result = Result(
            artifacts=map_artifacts(ctx, maps, "neuron_gradient", f"{params['mode']} neuron gradient", [subject] * len(images)),
            arrays={"neuron_gradient": maps.astype(np.float32), "gradients": gradients.numpy(), "activations": activations.numpy()},
            metrics={
                "layer": layer,
                "channel": params["channel"],
                "position": list(position) if position else None,
                "activation": [round(float(a), 5) for a in activations],
            },
            caveats=[
                "A unit's gradient shows what would change its activation, for this image; units respond to "
                "several patterns (distributed representations), so one picture never names a unit's meaning."
            ],
        )
        ctx.progress(1, 2, "top patches")
        if params["top_patches"]:
            self._top_patches(ctx, layer, params, result)
        ctx.progress(2, 2, "done")
        return result

    def _top_patches(self, ctx: Context, layer: str, params: dict, result: Result) -> None:
        """For each image: the unit of this channel that fires most, cropped to its measured receptive field."""
        model = ctx.model
        pictures = ctx.display_images()
        maps = grid_output(model, ctx.images, layer)[:, params["channel"]]  # one forward for every image
        if maps.dim() != 3:
            return
        found = []
        for index, channel_map in enumerate(maps):
            image = ctx.images[index : index + 1]
            row, column = np.unravel_index(int(channel_map.argmax()), channel_map.shape)
            gradient, _ = neuron_gradient(model, image, layer, params["channel"], (int(row), int(column)), False)
            support = gradient.abs().amax(ctx.channel_axis)[0].numpy() > 0
            box = bounding_box(support)
            if box is None:
                continue
            top, left, bottom, right = box
            found.append((float(channel_map.max()), index, pictures[index][top : bottom + 1, left : right + 1], box))
            ctx.check_cancelled()
        found.sort(key=lambda item: -item[0])
        rows = [["rank", "image", "activation", "receptive field (top, left, bottom, right)"]]
        for rank, (value, index, patch, box) in enumerate(found[: params["top_patches"]], start=1):
            name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
            result.artifacts.append(
                Artifact(
                    f"top_patch_{rank}.png",
                    f"#{rank}: {name}, activation {value:.3g}",
                    data=png_bytes(patch, 96),
                    array="activations",
                    group="most activating patches",
                )
            )
            rows.append([rank, name, round(value, 5), list(box)])
        result.artifacts.append(Artifact("top_patches.csv", "patches that activate the unit most", kind="table", rows=rows, group="most activating patches"))


@hookimpl
def register_techniques():
    return [NeuronGradient()]
