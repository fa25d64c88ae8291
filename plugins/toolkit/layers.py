"""Choosing and reading a model's layers: the one ``layer`` parameter, default layers, layer outputs.

Layers are named by their ONNX node names (what ``viz-server inspect`` lists). An empty ``layer`` value means
the model's default layer of the kind the technique needs, which the model frontend finds:
``model.layers.default_cam_layer`` (the deepest image feature map: not the head's output or decoding, not an
attention tensor; class activation maps also check the target reaches it, ``cam.reached_layer``) or
``model.layers.first_conv``.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server.errors import UserError
from viz_server.techniques import Param

LAST_SPATIAL = "the model's deepest image feature map"
FIRST_CONV = "the first conv layer"


def layer_param(what: str = "Layer", default: str = LAST_SPATIAL) -> Param:
    """The ``layer`` parameter every layer-reading technique takes: an ONNX node name, empty for ``default``."""
    return Param("layer", "layer", "", f"{what} (ONNX node name); empty = {default}.")


def spatial_layer(model, name: str) -> str:
    """``name``, or the model's deepest image feature map when empty; refuses a layer that is not N x C x H x W."""
    chosen = name or model.layers.default_cam_layer
    if not chosen:
        raise UserError(
            "this model has no image feature map (N x C x H x W following the input's size, not its output) to use by default; "
            "name a layer with the layer parameter (see viz-server inspect)."
        )
    layer = model.layer(chosen)
    if len(layer.output_shape) != 4 and not layer.tokens:
        raise UserError(
            f"layer '{chosen}' has output shape {list(layer.output_shape)}; pick a spatial layer (N x C x H x W, or a transformer's tokens on a grid)."
        )
    return chosen


def layer_names(text: str) -> list[str]:
    """A comma-separated ``layers`` parameter value as a list of names."""
    return [name.strip() for name in str(text).split(",") if name.strip()]


def default_layers(model, count: int = 4) -> list[str]:
    """Up to ``count`` relu-like spatial layers spread from the first to the last."""
    candidates = [layer.name for layer in model.layers if layer.spatial and layer.kind == "relu"]
    if not candidates:
        candidates = [layer.name for layer in model.layers if layer.spatial]
    if len(candidates) <= count:
        return candidates
    return [candidates[int(round(i))] for i in np.linspace(0, len(candidates) - 1, count)]


def layer_outputs(model, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of several layers for a batch, in one forward pass without gradients that stops at the deepest."""
    with torch.no_grad():
        return model.feature_extractor(layers)(images)


def layer_output(model, images: torch.Tensor, layer: str) -> torch.Tensor:
    return layer_outputs(model, images, [layer])[layer]


def image_grid(values: torch.Tensor, layer) -> torch.Tensor:
    """A layer's output (or its gradient) as N x C x h x w: as it is for a feature map; a transformer's tokens laid
    on their grid, the class token(s) left out (``Layer.tokens``)."""
    if layer.tokens == "sequence":
        rows, columns = layer.grid
        return values[:, layer.leading_tokens :].reshape(len(values), rows, columns, -1).permute(0, 3, 1, 2)
    if layer.tokens == "channels_last":
        return values.permute(0, 3, 1, 2)
    return values


def grid_output(model, images: torch.Tensor, layer: str) -> torch.Tensor:
    """A layer's output as N x C x h x w, a transformer's tokens laid on their grid (``image_grid``)."""
    return image_grid(layer_output(model, images, layer), model.layer(layer))


def parse_position(text: str) -> tuple[int, int] | None:
    """A ``ROW,COLUMN`` unit position in a layer's map; empty = none (the whole channel)."""
    if not str(text).strip():
        return None
    try:
        row, column = (int(part) for part in str(text).replace(" ", "").split(","))
    except ValueError:
        raise UserError(f"position {text!r} must look like ROW,COLUMN (e.g. 3,4) or be empty.") from None
    return row, column


def layer_weights(model, layer) -> np.ndarray:
    """The weight tensor a layer keeps in the model file (a conv's out x in x kh x kw kernels, a linear layer's matrix)."""
    from onnx import numpy_helper

    for tensor in model.onnx_model.graph.initializer:
        if tensor.name == layer.weight:
            return numpy_helper.to_array(tensor).astype(np.float32)
    raise UserError(f"layer '{layer.name}' keeps no weights in the model file.")
