"""The built-in plugins, installed as ``viz_server_plugins``.

Each module below is shaped exactly like a third-party plugin: hook implementations marked
``@viz_server.hookimpl``, registered through the same ``pm.register`` path (``viz_server.plugins`` lists this
package in ``DEFAULT_PLUGINS`` and registers every module named in ``PLUGINS``). Techniques import only the
contract (``viz_server.techniques``) and the public toolkit (``viz_server_plugins.toolkit``), never each other.
"""

PLUGINS = (
    # what the model frontend and the reports are built from
    "viz_server_plugins.converters",
    "viz_server_plugins.decoders",
    "viz_server_plugins.conventions",
    "viz_server_plugins.checks",
    "viz_server_plugins.renderers",
    "viz_server_plugins.report_summary",
    # techniques, one per module: attribution
    "viz_server_plugins.saliency",
    "viz_server_plugins.guided_backprop",
    "viz_server_plugins.deconvnet",
    "viz_server_plugins.gradcam",
    "viz_server_plugins.guided_gradcam",
    "viz_server_plugins.integrated_gradients",
    "viz_server_plugins.occlusion",
    "viz_server_plugins.rise",
    "viz_server_plugins.attention_rollout",
    "viz_server_plugins.transformer_attribution",
    "viz_server_plugins.attribution_ranking",
    "viz_server_plugins.neuron_gradient",
    "viz_server_plugins.layer_view",
    # network
    "viz_server_plugins.class_templates",
    "viz_server_plugins.filters",
    "viz_server_plugins.activation_maps",
    "viz_server_plugins.embeddings",
    # optimization
    "viz_server_plugins.class_visualization",
    "viz_server_plugins.neuron_visualization",
    "viz_server_plugins.feature_inversion",
    # robustness
    "viz_server_plugins.adversarial",
    "viz_server_plugins.fooling_image",
    "viz_server_plugins.robustness_curve",
    "viz_server_plugins.shape_bias",
    "viz_server_plugins.corruptions",
    "viz_server_plugins.defences",
    # the whole labeled set
    "viz_server_plugins.class_accuracy",
    "viz_server_plugins.calibration",
    "viz_server_plugins.shortcut_scan",
    # style
    "viz_server_plugins.style_transfer",
)
