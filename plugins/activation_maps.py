"""Activation (feature) maps (lecture notes, "Visualization of Neural Networks"): for an image and a layer,
the grid of channel maps with the most active channels first, and upsampled overlays showing where each of
the top channels fires on the image."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from viz_server import hookimpl
from viz_server.rendering import heatmap, overlay, png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import grid_output, layer_param, spatial_layer
from viz_server_plugins.toolkit.pictures import grid


class ActivationMaps(Technique):
    name = "activation_maps"
    title = "Activation maps"
    family = "network"
    suites = ("network",)
    summary = "Every channel map of a layer for an image, most active first, with overlays of where the top ones fire."
    params = (
        layer_param("Spatial layer"),
        Param("max_channels", "int", 64, "Most channel maps in the grid.", minimum=1, maximum=1024),
        Param("overlays", "int", 6, "Top channels shown as overlays on the image.", minimum=0, maximum=32),
    )
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        name = spatial_layer(model, params["layer"])
        activations = grid_output(model, ctx.images, name)  # N x C x h x w, tokens on their grid
        pictures = ctx.display_images()
        result = Result(
            arrays={"activations": activations.numpy()},
            metrics={"layer": name, "channels": int(activations.shape[1])},
            caveats=[
                "Maps are scaled one by one: compare where channels fire, not how strongly across channels (the ranking and the raw array give the strengths)."
            ],
        )
        rankings = []
        for index, maps in enumerate(activations):
            image_name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
            group = f"{index}: {image_name}"
            order = torch.argsort(maps.mean(dim=(1, 2)), descending=True)
            top = order[: params["max_channels"]].tolist()
            rankings.append(top)
            tiles = [heatmap(maps[channel].numpy()) for channel in top]
            result.artifacts.append(
                Artifact(
                    f"maps_{index}.png",
                    f"{len(top)} channel maps of {name}, most active first",
                    data=png_bytes(grid(tiles, gap=2, most=8), 256),
                    array="activations",
                    group=group,
                )
            )
            enlarged = F.interpolate(maps[None], size=pictures[index].shape[:2], mode="bilinear", align_corners=False)[0]
            for rank, channel in enumerate(top[: params["overlays"]], start=1):
                result.artifacts.append(
                    Artifact(
                        f"overlay_{index}_{channel}.png",
                        f"#{rank}: channel {channel} (mean {float(maps[channel].mean()):.3g})",
                        data=png_bytes(overlay(pictures[index], enlarged[channel].numpy()), 128),
                        array="activations",
                        group=group,
                    )
                )
            ctx.progress(index + 1, len(activations), f"image {index + 1}")
        result.arrays["channel_order"] = np.asarray(rankings)
        result.metrics["top_channels"] = [ranking[:5] for ranking in rankings]
        return result


@hookimpl
def register_techniques():
    return [ActivationMaps()]
