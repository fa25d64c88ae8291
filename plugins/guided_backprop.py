"""Guided backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller 2015, "Striving for Simplicity").

The class score's gradient, back-propagated through every relu-like unit with only positive gradients where
the unit's input was positive as well: the forward mask and the deconvnet rule combined.
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.attribution import AttributionTechnique
from viz_server_plugins.relu_rules import relu_rule, uncovered_units
from viz_server_plugins.objectives import parse_region
from viz_server_plugins.saliency import REDUCE, class_gradient


class GuidedBackprop(AttributionTechnique):
    name = "guided_backprop"
    title = "Guided backpropagation"
    summary = "Gradients with only positive influence passed back through ReLUs (Springenberg et al. 2015)."
    extra_params = (REDUCE,)
    rule = "guided"
    caveats = (
        "Guided backpropagation is known to act like an edge detector that depends little on the upper layers "
        "(Adebayo et al. 2018; Nie et al. 2018): read the sanity check before trusting it.",
    )

    def attribute(self, model, images, targets, params):
        with relu_rule(model, self.rule):
            return class_gradient(model, images, targets, parse_region(params.get("region")))

    def run(self, ctx, params):
        result = super().run(ctx, params)
        uncovered = uncovered_units(ctx.model)
        if uncovered:
            result.caveats.append(f"The {self.rule} rule covers relu-like units only; these units pass ordinary gradients: {', '.join(uncovered)}.")
        return result


@hookimpl
def register_techniques():
    return [GuidedBackprop()]
