"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

At a spatial layer (default: the deepest image feature map the target's gradient reaches, see
``toolkit.cam.reached_layer``), each channel is weighted
by its spatially averaged gradient of the class score (Grad-CAM) or by the positive gradients weighted with
the second-order alphas of Grad-CAM++; the map is the ReLU of the weighted channel sum, upsampled to the input.
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server.techniques import Param
from viz_server_plugins.toolkit.attribution import AttributionTechnique
from viz_server_plugins.toolkit.cam import WEIGHTINGS, class_activation_map, settle_layer, upsample, upsample_param
from viz_server_plugins.toolkit.layers import layer_param, spatial_layer


class GradCAM(AttributionTechnique):
    name = "gradcam"
    title = "Grad-CAM"
    summary = "Where a spatial layer's class-relevant channels fire, weighted by their gradients (Selvaraju et al. 2017)."
    suites = ("attribution",)
    map_kind = "map"
    extra_params = (
        layer_param("Layer to explain at"),
        Param("weighting", "choice", "gradcam", "Channel weights: Grad-CAM's mean gradient or Grad-CAM++'s alphas.", choices=WEIGHTINGS),
        upsample_param("bilinear"),
    )
    ranking_variants = (("Grad-CAM++", {"weighting": "gradcam++"}),)
    caveats = ("Grad-CAM is only as sharp as its layer: each map cell covers a stride of input pixels (named above), and the map is smoothed over it.",)

    def settled_params(self, model, images, objective, params):
        return settle_layer(model, images, objective, params)

    def attribute(self, model, images, objective, params):
        layer = spatial_layer(model, params["layer"])
        cam = class_activation_map(model, images, objective, layer, params["weighting"])
        return upsample(cam, model.spec, params["upsample"])


@hookimpl
def register_techniques():
    return [GradCAM()]
