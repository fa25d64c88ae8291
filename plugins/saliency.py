"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks").

The map is |d score_c / d x|: the gradient of the target class's pre-softmax score with respect to the
input pixels, in absolute value, reduced over the colour channels (max, as in the paper, or sum).
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.toolkit.attribution import AttributionTechnique
from viz_server_plugins.toolkit.gradients import REDUCE, class_gradient


class Saliency(AttributionTechnique):
    name = "saliency"
    title = "Gradient saliency"
    summary = "Which pixels the class score is most sensitive to: |d score / d pixel| (Simonyan et al. 2014)."
    version = "2"
    suites = ("attribution",)
    extra_params = (REDUCE,)
    caveats = (
        "Saliency shows sensitivity, not evidence: a bright pixel is one whose small change moves the score most, "
        "which is not the same as a pixel the model relies on.",
        "Raw gradients are noisy; SmoothGrad (smooth_samples) and Grad-CAM give steadier pictures.",
    )

    def caveats_for(self, params):
        sensitivity, noisy = self.caveats
        return [sensitivity] if params.get("smooth_samples") else [sensitivity, noisy]

    def attribute(self, model, images, objective, params):
        return class_gradient(model, images, objective)


@hookimpl
def register_techniques():
    return [Saliency()]
