"""Input gradients of the two things techniques explain: a class score and one unit inside the network.

- ``class_gradient``: d objective / d input (Simonyan, Vedaldi & Zisserman 2014), one forward and one backward
  for a whole batch (the objective is a class score, a detection, a text ...: ``viz_server.objectives``);
- ``neuron_gradient``: d activation / d input for one unit or a whole channel of a layer (lecture notes,
  "Gradient of Activation w.r.t. Input"), plain or through the guided backpropagation rule.
"""

from __future__ import annotations

import contextlib

import torch

from viz_server.errors import UserError
from viz_server.techniques import Param
from viz_server_plugins.toolkit.layers import image_grid
from viz_server_plugins.toolkit.relu_rules import relu_rule

REDUCE = Param("reduce", "choice", "max", "How to merge colour channels: max (as in the paper) or sum.", choices=("max", "sum"))


def class_gradient(model, images: torch.Tensor, objective) -> torch.Tensor:
    """d objective / d input, for the objective's target on each image, in one forward and one backward pass."""
    inputs = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gradients,) = torch.autograd.grad(objective.total(model.module(inputs)), inputs)
    return gradients


def neuron_gradient(model, images: torch.Tensor, layer: str, channel: int, position, guided: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(d neuron / d input, the neuron's activation per image); without a position the neuron is the channel's sum."""
    inputs = images.detach().clone().requires_grad_(True)
    with relu_rule(model, "guided") if guided else contextlib.nullcontext(), torch.enable_grad():
        activations = image_grid(model.feature_extractor([layer])(inputs)[layer], model.layer(layer))  # the graph stops at the layer
        if not 0 <= channel < activations.shape[1]:
            raise UserError(f"channel {channel} is out of range: layer '{layer}' has {activations.shape[1]} channels.")
        selected = activations[:, channel]
        if position is not None:
            row, column = position
            if activations.dim() != 4 or not (0 <= row < activations.shape[2] and 0 <= column < activations.shape[3]):
                raise UserError(f"position {row},{column} is outside layer '{layer}' of shape {list(activations.shape[1:])}.")
            selected = selected[:, row, column]
        else:
            selected = selected.reshape(len(images), -1).sum(1)
        (gradients,) = torch.autograd.grad(selected.sum(), inputs)
    return gradients, selected.detach()
