"""An example third-party viz-server plugin package: one module per hook it implements.

The entry point names this package; viz-server registers every module listed in ``PLUGINS``.
"""

PLUGINS = (
    "viz_example_plugin.gradient_x_input",
    "viz_example_plugin.histogram",
    "viz_example_plugin.thresholded_relu",
    "viz_example_plugin.regression",
)
