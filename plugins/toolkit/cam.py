"""Class activation maps at a spatial layer: Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay
et al. 2018), the building block of the Grad-CAM family of techniques. A transformer's token layer is laid on its
image grid first (``image_grid``), so no ``reshape_transform`` is needed.

Each channel of the layer's output A is weighted by its spatially averaged gradient of the objective
(Grad-CAM) or by the positive gradients weighted with Grad-CAM++'s second-order alphas; the map is the ReLU
of the weighted channel sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from viz_server.errors import UserError
from viz_server.techniques import Param
from viz_server_plugins.toolkit.layers import image_grid, spatial_layer

WEIGHTINGS = ("gradcam", "gradcam++")


def upsample_param(default: str = "bilinear") -> Param:
    other = "nearest" if default == "bilinear" else "bilinear"
    return Param("upsample", "choice", default, "How the layer-resolution map is enlarged to the input.", choices=(default, other))


def activations_and_gradients(model, images: torch.Tensor, objective, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output A and d objective / dA, for every image (one forward, one backward).

    The autograd graph starts at the layer: its output is detached and made to require gradients in the
    forward hook, so the layers below it run without recording anything and the backward stops there. Both come
    back where ``images`` are (the graph may compute on a GPU)."""
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
    return torch.cat([a.detach() for a in captured]).to(images.device), torch.cat(gradients).to(images.device)


def channel_weights(activations: torch.Tensor, gradients: torch.Tensor, weighting: str) -> torch.Tensor:
    if weighting == "gradcam":
        return gradients.mean(dim=(2, 3))
    squared, cubed = gradients.pow(2), gradients.pow(3)
    denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * cubed
    alphas = squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return (alphas * F.relu(gradients)).sum(dim=(2, 3))


def class_activation_map(model, images, objective, layer: str, weighting: str = "gradcam") -> torch.Tensor:
    """N x h x w map at the layer's resolution, after the ReLU."""
    found = model.layer(layer)
    activations, gradients = (image_grid(values, found) for values in activations_and_gradients(model, images, objective, layer))
    weights = channel_weights(activations, gradients, weighting)
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))


def upsample(maps: torch.Tensor, spec, mode: str) -> torch.Tensor:
    """N x h x w -> N x H x W at the model's input size."""
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None], size=(spec.height, spec.width), mode=mode, **kwargs)[:, 0]


def reached_layer(model, images: torch.Tensor, objective) -> tuple[str, str]:
    """The deepest image feature map (``model.layers.cam_candidates``: H and W follow the input's, several channels,
    not the head's output or its decoding) that the objective's gradient reaches on these images, and a sentence
    naming it, its cell size and the deeper layers passed over and why. A model with one head is reached
    everywhere below it (no pass needed); one whose output several branches compute (a detector's class and box
    branches) is probed with one forward and one backward pass. Refuses, naming the closest layers, when the
    gradient reaches none."""
    table = model.layers
    candidates = list(table.cam_candidates)
    if not candidates:
        spatial_layer(model, "")  # refuses: the model has no image feature map at all
    if not table.branching_head and not any(table.get(name).tokens for name in candidates):
        return candidates[0], _chosen_because(table, candidates[0], [])  # one head: its gradient reaches every layer below it
    # several heads, or tokens: a transformer's last tokens may reach the head only through its class token
    reached: dict[str, list[bool]] = {}  # layer -> per pass through it: a finite, non-zero gradient arrived on its grid

    def watcher(name: str):
        layer = table.get(name)

        def arrived(gradient: torch.Tensor) -> None:
            grid = image_grid(gradient, layer)
            reached.setdefault(name, []).append(bool(torch.isfinite(grid).all() and grid.abs().amax() > 0))

        def watch(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(arrived)

        return watch

    handles = [model.submodule(name).register_forward_hook(watcher(name)) for name in candidates]
    try:
        with torch.enable_grad():
            objective.total(model.module(images.detach().clone().requires_grad_(True))).backward()
    finally:
        for handle in handles:
            handle.remove()
    unreached: list[str] = []
    for name in candidates:
        if any(reached.get(name, [])):
            return name, _chosen_because(table, name, unreached)
        unreached.append(name)
    passed = [f"{name} ({why})" for name, why in table.passed_over()[-3:]]
    closest = [f"{name} (the target's gradient does not reach it)" for name in unreached[:3]] + passed
    raise UserError(
        "the target's gradient reaches none of this model's image feature maps on these images, so there is no layer to take a "
        f"class activation map at; closest: {'; '.join(closest) or 'none'}. Name a layer with the layer parameter (see viz-server inspect)."
    )


def _chosen_because(table, name: str, unreached: list[str]) -> str:
    layer = table.get(name)
    rows, columns = layer.grid or layer.output_shape[2:4]
    unit = "tokens" if layer.tokens else "cells"
    cells = f"{rows} x {columns} {unit} of {layer.stride[0]} x {layer.stride[1]} input pixels" if layer.stride else ""
    channels = layer.output_shape[-1] if layer.tokens else layer.output_shape[1]
    skipped = [f"{other} (the target's gradient does not reach it on these images)" for other in unreached]
    skipped += [f"{other} ({why})" for other, why in reversed(table.passed_over(deeper_than=name))]
    shown = "; ".join(skipped[:4]) + (f"; and {len(skipped) - 4} more" if len(skipped) > 4 else "")
    return f"The map is taken at layer {name} ({channels} channels, {cells}), the deepest image feature map the target's gradient reaches on these images" + (
        f"; deeper layers passed over: {shown}." if skipped else "."
    )


def settle_layer(model, images: torch.Tensor, objective, params: dict) -> tuple[dict, list[str]]:
    """``params`` with an empty ``layer`` replaced by ``reached_layer``'s choice (so that the sanity check's
    randomized models and every later map use the same layer), and the sentence saying why."""
    if params.get("layer"):
        return params, []
    layer, because = reached_layer(model, images, objective)
    return {**params, "layer": layer}, [because]
