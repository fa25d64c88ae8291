"""Guided backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller 2015, "Striving for Simplicity").

The class score's gradient, back-propagated through every relu-like unit with only positive gradients where
the unit's input was positive as well: the forward mask and the deconvnet rule combined.
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.toolkit.attribution import RuleAttribution


class GuidedBackprop(RuleAttribution):
    name = "guided_backprop"
    title = "Guided backpropagation"
    summary = "Gradients with only positive influence passed back through ReLUs (Springenberg et al. 2015)."
    suites = ("attribution",)
    rule = "guided"
    caveats = (
        "Guided backpropagation is known to act like an edge detector that depends little on the upper layers "
        "(Adebayo et al. 2018; Nie et al. 2018): read the sanity check before trusting it.",
    )


@hookimpl
def register_techniques():
    return [GuidedBackprop()]
