"""Neuron and channel visualization by optimization (Erhan et al. 2009; Olah et al. 2017, "Feature
Visualization"): an image that maximizes one unit or one channel's mean activation at any layer. The Fourier
parameterization with random jitter, scale and rotation (the Lucid recipe) gives far less noise."""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.techniques import Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import image_grid, layer_param, parse_position, spatial_layer
from viz_server_plugins.toolkit.optimization import OPTIMIZATION_PARAMS, optimize, trajectory_result

PARAMS = tuple(Param(p.name, p.kind, "fourier", p.help, choices=p.choices) if p.name == "parameterization" else p for p in OPTIMIZATION_PARAMS)


class NeuronVisualization(Technique):
    name = "neuron_visualization"
    title = "Neuron visualization"
    family = "optimization"
    summary = "An image optimized to excite one channel or unit at any layer (Olah et al. 2017)."
    params = (
        layer_param(),
        Param("channel", "int", 0, "Channel to excite.", minimum=0),
        Param("position", "str", "", "ROW,COLUMN of one unit; empty = the channel's mean over the map."),
    ) + PARAMS
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        layer = spatial_layer(model, params["layer"]) if not params["layer"] else model.layer(params["layer"]).name
        position = parse_position(params["position"])
        found = model.layer(layer)
        extract = model.feature_extractor([layer])  # the graph stops at the layer: no step pays for the layers above

        def objective(batch: torch.Tensor) -> torch.Tensor:
            activation = image_grid(extract(batch)[layer], found)
            if not 0 <= params["channel"] < activation.shape[1]:
                raise UserError(f"channel {params['channel']} is out of range: layer '{layer}' has {activation.shape[1]} channels.")
            unit = activation[0, params["channel"]]
            if position is None:
                return unit.mean()
            row, column = position
            if unit.dim() != 2 or not (0 <= row < unit.shape[0] and 0 <= column < unit.shape[1]):
                raise UserError(f"position {row},{column} is outside layer '{layer}' of shape {list(activation.shape[1:])}.")
            return unit[row, column]

        trajectory = optimize(ctx, objective, params)
        where = f"unit {position[0]},{position[1]} of " if position else ""
        result = trajectory_result(ctx, trajectory, "neuron", f"an image exciting {where}channel {params['channel']} of {layer}")
        result.metrics.update({"layer": layer, "channel": params["channel"], "parameterization": params["parameterization"]})
        result.caveats.append("One optimized image shows one thing a unit responds to; units usually respond to several.")
        return result


@hookimpl
def register_techniques():
    return [NeuronVisualization()]
