"""The toolkit for technique authors: what the built-in techniques are made of, public and documented.

Built-in techniques import only this toolkit and the contract (``viz_server.techniques``), never each other;
a third-party plugin gets exactly the same pieces (see ``docs/plugins.md``). One job per module:

- ``attribution``: ``AttributionTechnique``, the base of every class attribution (SmoothGrad, mask and box,
  sanity check, deletion/insertion curves, pictures); ``RuleAttribution`` for modified-backward methods;
- ``objectives``: reference labels for accuracy measurements (what a target means on the model's output is
  the core's ``viz_server.objectives``: ``ctx.objective(target, region)``);
- ``degenerate``: whether a map can support a conclusion at all (all zero, constant, not finite);
- ``gradients``: class and neuron input gradients; ``cam``: class activation maps at a layer;
- ``relu_rules``: guided backpropagation and deconvnet backward rules through relu-like units;
- ``layers``: the one ``layer`` parameter, default layers, layer outputs and weights;
- ``sanity``, ``faithfulness``, ``localization``: the checks every map gets;
- ``road`` (remove-and-debias curves), ``baselines`` (model-free maps), ``stability`` (input invariance,
  max-sensitivity): what the method ranking scores maps with;
- ``optimization``: input optimization loops (pixel and Fourier parameterizations);
- ``attacks``: FGSM, PGD and fooling-image loops in image space; ``image_transforms``: corruptions;
- ``pictures``: grids, scaling and signed pictures (heatmaps and PNGs are ``viz_server.rendering``'s).
"""

from viz_server_plugins.toolkit.attribution import (
    SMOOTH_PARAMS,
    TARGET_PARAMS,
    TRUST_PARAMS,
    AttributionTechnique,
    RuleAttribution,
    class_attributions,
    smoothed,
)
from viz_server_plugins.toolkit.gradients import REDUCE, class_gradient, neuron_gradient
from viz_server_plugins.toolkit.layers import default_layers, layer_output, layer_outputs, layer_param, spatial_layer

__all__ = [
    "REDUCE",
    "SMOOTH_PARAMS",
    "TARGET_PARAMS",
    "TRUST_PARAMS",
    "AttributionTechnique",
    "RuleAttribution",
    "class_attributions",
    "class_gradient",
    "default_layers",
    "layer_output",
    "layer_outputs",
    "layer_param",
    "neuron_gradient",
    "smoothed",
    "spatial_layer",
]
