"""Deconvnet attribution (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks").

The class score back-propagated through every relu-like unit with only positive gradients, ignoring where the
unit was active in the forward pass (the "deconvnet" backward pass of the paper).
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.toolkit.attribution import RuleAttribution


class Deconvnet(RuleAttribution):
    name = "deconvnet"
    title = "Deconvnet"
    summary = "Positive gradients passed back through ReLUs regardless of the forward mask (Zeiler & Fergus 2014)."
    suites = ("attribution",)
    rule = "deconvnet"
    caveats = ("The deconvnet map ignores which units were active for this image, so it often looks alike across classes.",)


@hookimpl
def register_techniques():
    return [Deconvnet()]
