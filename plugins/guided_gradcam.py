"""Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM map, so the
fine detail of the former is kept only where the class-discriminative map is active."""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.attribution import AttributionTechnique
from viz_server_plugins.gradcam import LAYER, cam_layer, class_activation_map, upsample
from viz_server_plugins.relu_rules import relu_rule
from viz_server_plugins.objectives import parse_region
from viz_server_plugins.saliency import REDUCE, class_gradient
from viz_server.techniques import Param


class GuidedGradCAM(AttributionTechnique):
    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    summary = "Guided backpropagation masked by the class's Grad-CAM map (Selvaraju et al. 2017)."
    extra_params = (LAYER, Param("upsample", "choice", "nearest", "How the Grad-CAM map is enlarged to the input.", choices=("nearest", "bilinear")), REDUCE)
    caveats = ("Guided Grad-CAM inherits guided backpropagation's insensitivity to the upper layers; see the sanity check.",)

    def attribute(self, model, images, targets, params):
        region = parse_region(params.get("region"))
        cam = upsample(class_activation_map(model, images, targets, cam_layer(model, params["layer"]), region=region), model.spec, params["upsample"])
        with relu_rule(model, "guided"):
            guided = class_gradient(model, images, targets, region)
        cam = cam[:, None] if model.spec.layout == "NCHW" else cam[..., None]
        return guided * cam


@hookimpl
def register_techniques():
    return [GuidedGradCAM()]
