"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

At a spatial layer (default: the model's last spatial layer, found by the frontend), each channel is weighted
by its spatially averaged gradient of the class score (Grad-CAM) or by the positive gradients weighted with
the second-order alphas of Grad-CAM++; the map is the ReLU of the weighted channel sum, upsampled to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.techniques import Param
from viz_server_plugins.attribution import AttributionTechnique
from viz_server_plugins.objectives import parse_region, selected_score

LAYER = Param("layer", "layer", "", "Layer (ONNX node name) to explain at; empty = the model's last spatial layer.")
UPSAMPLE = Param("upsample", "choice", "bilinear", "How the layer-resolution map is enlarged to the input.", choices=("bilinear", "nearest"))


def cam_layer(model, name: str) -> str:
    chosen = name or model.layers.default_cam_layer
    if not chosen:
        raise UserError("this model has no spatial layer (N x C x H x W with H, W > 1) to use by default; name one with the layer parameter (see viz-server inspect).")
    layer = model.layer(chosen)
    if len(layer.output_shape) != 4:
        raise UserError(f"layer '{chosen}' has output shape {list(layer.output_shape)}; pick a spatial layer (N x C x H x W).")
    return chosen


def activations_and_gradients(model, images: torch.Tensor, targets, layer: str, region=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output A and d score[target] / dA, for every image (one forward, one backward).

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
            gradients = torch.autograd.grad(selected_score(scores, targets, region), captured)
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


def class_activation_map(model, images, targets, layer: str, weighting: str = "gradcam", region=None) -> torch.Tensor:
    """N x h x w map at the layer's resolution, after the ReLU."""
    activations, gradients = activations_and_gradients(model, images, targets, layer, region)
    weights = channel_weights(activations, gradients, weighting)
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))


def upsample(maps: torch.Tensor, spec, mode: str) -> torch.Tensor:
    """N x h x w -> N x H x W at the model's input size."""
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None], size=(spec.height, spec.width), mode=mode, **kwargs)[:, 0]


class GradCAM(AttributionTechnique):
    name = "gradcam"
    title = "Grad-CAM"
    summary = "Where a spatial layer's class-relevant channels fire, weighted by their gradients (Selvaraju et al. 2017)."
    map_kind = "map"
    extra_params = (
        LAYER,
        Param("weighting", "choice", "gradcam", "Channel weights: Grad-CAM's mean gradient or Grad-CAM++'s alphas.", choices=("gradcam", "gradcam++")),
        UPSAMPLE,
    )
    caveats = (
        "Grad-CAM is only as sharp as its layer: at the last spatial layer each map cell covers a large patch of the image.",
    )

    def attribute(self, model, images, targets, params):
        layer = cam_layer(model, params["layer"])
        cam = class_activation_map(model, images, targets, layer, params["weighting"], parse_region(params.get("region")))
        return upsample(cam, model.spec, params["upsample"])


@hookimpl
def register_techniques():
    return [GradCAM()]
