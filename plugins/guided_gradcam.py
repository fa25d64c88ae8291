"""Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times the upsampled Grad-CAM map, so the
fine detail of the former is kept only where the class-discriminative map is active."""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.toolkit.attribution import AttributionTechnique
from viz_server_plugins.toolkit.cam import class_activation_map, settle_layer, upsample, upsample_param
from viz_server_plugins.toolkit.gradients import REDUCE, class_gradient
from viz_server_plugins.toolkit.layers import layer_param, spatial_layer
from viz_server_plugins.toolkit.relu_rules import RULE_UNITS, relu_rule, rule_caveat


class GuidedGradCAM(AttributionTechnique):
    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    summary = "Guided backpropagation masked by the class's Grad-CAM map (Selvaraju et al. 2017)."
    suites = ("attribution",)
    extra_params = (layer_param("Layer of the Grad-CAM map"), upsample_param("nearest"), REDUCE, RULE_UNITS)
    caveats = ("Guided Grad-CAM inherits guided backpropagation's insensitivity to the upper layers; see the sanity check.",)

    def settled_params(self, model, images, objective, params):
        return settle_layer(model, images, objective, params)

    def attribute(self, model, images, objective, params):
        cam = upsample(class_activation_map(model, images, objective, spatial_layer(model, params["layer"])), model.spec, params["upsample"])
        with relu_rule(model, "guided", params.get("rule_units", "rectifiers")):
            guided = class_gradient(model, images, objective)
        cam = cam[:, None] if model.spec.layout == "NCHW" else cam[..., None]
        return guided * cam

    def run(self, ctx, params):
        result = super().run(ctx, params)
        result.caveats.append(rule_caveat(ctx.model, "guided", params["rule_units"]))
        return result


@hookimpl
def register_techniques():
    return [GuidedGradCAM()]
