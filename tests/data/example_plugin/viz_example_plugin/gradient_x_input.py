"""Gradient x input (Shrikumar et al. 2016, "Not Just a Black Box"), on viz-server's attribution toolkit.

Subclassing ``AttributionTechnique`` gives it what every built-in class attribution gets: targets, SmoothGrad,
the sanity check, deletion/insertion curves, a mask and box, and the pictures. It adds one artifact of its
own kind, a histogram of the attribution values, which ``viz_example_plugin.histogram`` renders.
"""

import numpy as np

from viz_server import hookimpl
from viz_server.techniques import Artifact, Param
from viz_server_plugins.toolkit import AttributionTechnique, class_gradient


class GradientTimesInput(AttributionTechnique):
    name = "gradient_x_input"
    title = "Gradient x input"
    summary = "Input times its gradient, summed over channels (Shrikumar et al. 2016)."
    version = "0.4.0"
    extra_params = (Param("absolute", "bool", True, "Show magnitudes instead of positive contributions only."),)
    caveats = ("Gradient x input measures contributions against an all-zero input, which may not mean 'absent' for this model.",)

    def attribute(self, model, images, objective, params):
        return class_gradient(model, images, objective) * images

    def to_map(self, raw, model, params):
        axis = 1 if model.spec.layout == "NCHW" else 3
        summed = raw.detach().sum(axis)
        return (summed.abs() if params["absolute"] else summed.clamp(min=0)).cpu().numpy()

    def run(self, ctx, params):
        result = super().run(ctx, params)
        values = result.arrays[self.name].ravel()
        counts, edges = np.histogram(values, bins=12)
        rows = [["from", "to", "pixels"]] + [[round(float(a), 6), round(float(b), 6), int(c)] for a, b, c in zip(edges[:-1], edges[1:], counts)]
        result.artifacts.append(Artifact("histogram", "how the attribution values are spread", kind="histogram", rows=rows, group="checks"))
        return result


@hookimpl
def register_techniques():
    return [GradientTimesInput()]
