"""Seeing the weights (lecture notes, "Visualization of Neural Networks").

- Class templates: when a fully connected layer reads the image directly (linear classifiers, an MLP's first
  layer), each unit's weights reshape to the image's shape; normalized to 0-255 they show the template the
  unit matches.
- Filters: a conv layer's kernels as an image grid; the first layer in colour, deeper layers per input channel
  or averaged over input channels (the choice is stated in the result).
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique


def weight_array(model, layer) -> np.ndarray:
    for tensor in model.onnx_model.graph.initializer:
        if tensor.name == layer.weight:
            return numpy_helper.to_array(tensor).astype(np.float32)
    raise UserError(f"layer '{layer.name}' keeps no weights in the model file.")


def scale(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linear map to 0-255 (symmetric values keep 0 at mid-grey is not assumed: min -> 0, max -> 255)."""
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high - low < 1e-12:
        return np.full(values.shape, 128, np.uint8)
    return np.clip((values - low) / (high - low) * 255 + 0.5, 0, 255).astype(np.uint8)


def grid(tiles: list[np.ndarray], columns: int, gap: int = 1) -> np.ndarray:
    """Tiles (H x W or H x W x 3, uint8) laid out on a white grid."""
    tiles = [tile if tile.ndim == 3 else np.repeat(tile[..., None], 3, axis=2) for tile in tiles]
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        canvas[top : top + height, left : left + width] = tile
    return canvas


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
    params = (Param("normalize", "choice", "per_unit", "Scale each template on its own or all on one scale.", choices=("per_unit", "global")),
              Param("max_units", "int", 64, "Most templates shown.", minimum=1, maximum=1024))
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model, spec = ctx.model, ctx.model.spec
        layer = first_linear_reading_input(model)
        if layer is None or not layer.weight:
            raise UserError("no fully connected layer reads this model's image directly; class templates need a linear "
                            "classifier or an MLP (use the filters technique for conv layers).")
        weights = weight_array(model, layer)
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
        names = [spec.label(i) for i in range(len(pictures))] if layer.output_shape and layer.output_shape[-1] == spec.num_classes else [str(i) for i in range(len(pictures))]
        artifacts = [Artifact("templates.png", f"weights of {layer.name}, one template per unit ({params['normalize'].replace('_', ' ')} scaling)",
                              data=png_bytes(grid(pictures, min(10, len(pictures))), 256), array="templates", group="templates")]
        artifacts += [Artifact(f"template_{i}.png", f"template for {name}", data=png_bytes(picture, 96), array="templates", group="one per unit")
                      for i, (picture, name) in enumerate(zip(pictures, names))]
        return Result(artifacts=artifacts, arrays={"templates": templates.astype(np.float32)},
                      metrics={"layer": layer.name, "units": len(pictures)},
                      caveats=["A template is what the unit's score is linear in; bright pixels raise the score, dark ones lower it."])


class Filters(Technique):
    name = "filters"
    title = "Filters"
    family = "network"
    summary = "A conv layer's kernels as an image grid: the first layer in colour, deeper layers per input channel or averaged."
    params = (
        Param("layer", "layer", "", "Conv layer (ONNX node name); empty = the first conv layer."),
        Param("normalize", "choice", "per_filter", "Scale each filter on its own or all on one scale.", choices=("per_filter", "global")),
        Param("deep_mode", "choice", "average", "For kernels with other than 1/3 input channels: average them, or show one input channel.",
              choices=("average", "channel")),
        Param("input_channel", "int", 0, "With deep_mode=channel: which input channel to show.", minimum=0),
        Param("max_filters", "int", 64, "Most filters shown.", minimum=1, maximum=1024),
    )
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        name = params["layer"] or model.layers.first_conv
        if not name:
            raise UserError("this model has no conv layer with weights; for a linear model use class_templates.")
        layer = model.layer(name)
        if layer.kind != "conv" or not layer.weight:
            raise UserError(f"layer '{name}' is not a conv layer with stored weights; pick one from `viz-server inspect`.")
        kernels = weight_array(model, layer)[: params["max_filters"]]  # out x in x kh x kw
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
            artifacts=[Artifact("filters.png", f"{len(pictures)} filters of {name}, {how}, {params['normalize'].replace('_', ' ')} scaling",
                                data=png_bytes(picture, 320), array="kernels", group="filters")],
            arrays={"kernels": kernels.astype(np.float32)},
            metrics={"layer": name, "filters": len(pictures), "kernel_size": list(kernels.shape[2:]), "shown": how},
            caveats=["Only the first layer's filters act on pixels directly; deeper kernels combine feature maps, "
                     "so their pictures are hard to read on their own."],
        )


@hookimpl
def register_techniques():
    return [ClassTemplates(), Filters()]
