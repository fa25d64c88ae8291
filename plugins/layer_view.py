"""Layer-by-layer view (Zeiler & Fergus 2014, fig. 2; projections by guided backpropagation, Springenberg et
al. 2015): for each chosen layer, the channels an image excites most, each projected back to pixel space from
its strongest unit. Low layers show edges and colour, deeper layers larger parts."""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import heatmap_png, png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.gradients import neuron_gradient
from viz_server_plugins.toolkit.layers import default_layers, layer_names, layer_outputs
from viz_server_plugins.toolkit.pictures import signed_picture


class LayerView(Technique):
    name = "layer_view"
    title = "Layer-by-layer view"
    family = "attribution"
    summary = "The channels an image excites most at each chosen layer, projected back to pixels (Zeiler & Fergus 2014)."
    params = (
        Param("layers", "str", "", "Comma-separated layer names (ONNX nodes); empty = up to 4 relu-like spatial layers."),
        Param("top_k", "int", 4, "Channels shown per layer.", minimum=1, maximum=16),
    )
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        names = layer_names(params["layers"]) or default_layers(model)
        if not names:
            raise UserError("this model has no spatial layers to show; give layer names with the layers parameter.")
        for name in names:
            if len(model.layer(name).output_shape) != 4:
                raise UserError(f"layer '{name}' is not a spatial map (N x C x H x W); pick a conv or relu layer.")
        activations = layer_outputs(model, ctx.images, names)
        pictures = ctx.display_images()
        result = Result(caveats=["Each projection shows one unit for this image only; channels respond to several patterns."])
        total, done = len(pictures) * len(names) * params["top_k"], 0
        rows = [["image", "layer", "channel", "mean activation", "max activation"]]
        for index in range(len(pictures)):
            image_name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
            for name in names:
                maps = activations[name][index]  # C x h x w
                means = maps.mean(dim=(1, 2))
                top = torch.argsort(means, descending=True)[: params["top_k"]].tolist()
                group = f"{index}: {image_name} · {name}"
                for channel in top:
                    row, column = np.unravel_index(int(maps[channel].argmax()), maps[channel].shape)
                    gradient, _ = neuron_gradient(model, ctx.images[index : index + 1], name, channel, (int(row), int(column)), guided=True)
                    key = f"projection_{index}_{len(result.arrays)}"
                    result.arrays[key] = gradient[0].numpy()
                    result.artifacts.append(
                        Artifact(
                            f"{key}.png",
                            f"channel {channel}: guided projection of its strongest unit",
                            data=png_bytes(signed_picture(gradient[0].numpy(), model.spec.layout), 96),
                            array=key,
                            group=group,
                        )
                    )
                    result.artifacts.append(
                        Artifact(
                            f"activation_{key}.png",
                            f"channel {channel}: where it fires (mean {float(means[channel]):.3g})",
                            data=heatmap_png(maps[channel].numpy(), 96),
                            array=key,
                            group=group,
                        )
                    )
                    rows.append([image_name, name, channel, round(float(means[channel]), 5), round(float(maps[channel].max()), 5)])
                    done += 1
                    ctx.progress(done, total, f"{name}: channel {channel}")
        result.artifacts.append(Artifact("top_channels.csv", "most excited channels per layer", kind="table", rows=rows, group="summary"))
        result.metrics = {"layers": names, "channels_per_layer": params["top_k"]}
        return result


@hookimpl
def register_techniques():
    return [LayerView()]
