"""Class activation maps at a spatial layer: Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay
et al. 2018), the building block of the Grad-CAM family of techniques.

Each channel of the layer's output A is weighted by its spatially averaged gradient of the objective
(Grad-CAM) or by the positive gradients weighted with Grad-CAM++'s second-order alphas; the map is the ReLU
of the weighted channel sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from viz_server.errors import UserError
from viz_server.techniques import Param

WEIGHTINGS = ("gradcam", "gradcam++")


def upsample_param(default: str = "bilinear") -> Param:
    other = "nearest" if default == "bilinear" else "bilinear"
    return Param("upsample", "choice", default, "How the layer-resolution map is enlarged to the input.", choices=(default, other))


def activations_and_gradients(model, images: torch.Tensor, objective, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output A and d objective / dA, for every image (one forward, one backward).

    The autograd graph starts at the layer: its output is detached and made to require gradients in the
    forward hook, so the layers below it run without recording anything and the backward stops there."""
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise UserError(f"layer '{layer}' has several outputs; pick a layer with one output.")
        output = output.detach().requires_grad_(True)
        captured.append(output)
        return output

    handle = model.submodule(layer).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            scores = model.module(images.detach())
            gradients = torch.autograd.grad(objective.total(scores), captured)
    finally:
        handle.remove()
    return torch.cat([a.detach() for a in captured]), torch.cat(gradients)


def channel_weights(activations: torch.Tensor, gradients: torch.Tensor, weighting: str) -> torch.Tensor:
    if weighting == "gradcam":
        return gradients.mean(dim=(2, 3))
    squared, cubed = gradients.pow(2), gradients.pow(3)
    denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * cubed
    alphas = squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return (alphas * F.relu(gradients)).sum(dim=(2, 3))


def class_activation_map(model, images, objective, layer: str, weighting: str = "gradcam") -> torch.Tensor:
    """N x h x w map at the layer's resolution, after the ReLU."""
    activations, gradients = activations_and_gradients(model, images, objective, layer)
    weights = channel_weights(activations, gradients, weighting)
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))


def upsample(maps: torch.Tensor, spec, mode: str) -> torch.Tensor:
    """N x h x w -> N x H x W at the model's input size."""
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None], size=(spec.height, spec.width), mode=mode, **kwargs)[:, 0]
