"""Modified backward passes through rectifiers, shared by the guided techniques.

- guided backprop (Springenberg et al. 2015, "Striving for Simplicity"): pass only positive gradients, and only
  where the unit's forward input was positive: ``relu(grad) * (x > 0)``.
- deconvnet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"): pass only
  positive gradients, ignoring the forward mask: ``relu(grad)``.

By default a rule applies to the standalone rectifiers the model frontend marks ``kind == "relu"``: Relu,
LeakyRelu, PRelu and a Clip(0, .) such as ReLU6. The Clip inside a hand-written hard-swish or hard-sigmoid
(``x * Clip(x + 3, 0, 6) / 6``) is part of a smooth activation, not a rectifier, and passes the ordinary
gradient, as every other unit does (HardSwish, GELU, SiLU, Sigmoid ...), which is what Captum's
``GuidedBackprop`` does for modules that are not ``nn.ReLU``. ``RULE_UNITS`` lets a user opt in to applying
the rule at every Clip too. ``rule_caveat`` says where the rule was and was not applied.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from viz_server.techniques import Param

UNCOVERED_KINDS = ("activation",)
RULE_UNITS = Param(
    "rule_units",
    "choice",
    "rectifiers",
    "Where the backward rule applies: standalone rectifiers (Relu, LeakyRelu, PRelu, ReLU6-style Clip), or also "
    "every Clip, including those inside hard-swish and hard-sigmoid.",
    choices=("rectifiers", "rectifiers_and_clips"),
)


class _Guided(torch.autograd.Function):
    """Forward: the unit's own output (a view, no copy). Backward: positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x > 0)  # a byte per value instead of keeping the float input alive
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved_tensors
        return grad.clamp(min=0).mul_(positive), None


class _Deconv(torch.autograd.Function):
    """Forward: the unit's own output. Backward: positive gradients, whatever the input was."""

    @staticmethod
    def forward(ctx, x, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0), None


RULES = {"guided": _Guided, "deconvnet": _Deconv}


def rule_layers(model, units: str = "rectifiers") -> tuple[list, list]:
    """(layers the rule applies to, non-linear layers that pass the ordinary gradient) for ``units``."""
    applied, skipped = [], []
    for layer in model.layers:
        if layer.kind == "relu" or (units == "rectifiers_and_clips" and layer.op == "Clip"):
            applied.append(layer)
        elif layer.kind in UNCOVERED_KINDS:
            skipped.append(layer)
    return applied, skipped


@contextmanager
def relu_rule(model, rule: str, units: str = "rectifiers"):
    """Within the block, the units ``rule_layers`` picks back-propagate with ``rule``."""
    function = RULES[rule]

    def hook(_module, inputs, output):
        return function.apply(inputs[0], output.detach())

    applied, _ = rule_layers(model, units)
    handles = [model.submodule(layer.name).register_forward_hook(hook) for layer in applied]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def rule_caveat(model, rule: str, units: str = "rectifiers") -> str:
    """One sentence on where ``rule`` was applied and which non-linear units passed the ordinary gradient."""
    applied, skipped = rule_layers(model, units)

    def listing(layers) -> str:
        counts: dict[str, int] = {}
        for layer in layers:
            what = "Clip in a hard activation" if layer.op == "Clip" and layer.kind != "relu" else layer.op
            counts[what] = counts.get(what, 0) + 1
        return ", ".join(f"{count} {what}" for what, count in sorted(counts.items()))

    if not applied:
        return f"The {rule} rule found no rectifier in this model, so the map is the ordinary gradient."
    sentence = f"The {rule} rule was applied at {len(applied)} rectifier{'s' if len(applied) != 1 else ''} ({listing(applied)})"
    if skipped:
        return f"{sentence}; these units passed the ordinary gradient: {listing(skipped)} (rule_units chooses)."
    return f"{sentence}; no other non-linear unit is in the model."
