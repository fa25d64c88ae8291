"""Modified backward passes through relu-like units, shared by the guided techniques.

- guided backprop (Springenberg et al. 2015, "Striving for Simplicity"): pass only positive gradients, and only
  where the unit's forward input was positive: ``relu(grad) * (x > 0)``.
- deconvnet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"): pass only
  positive gradients, ignoring the forward mask: ``relu(grad)``.

Relu-like units are the layers the model frontend marks ``kind == "relu"``: Relu, LeakyRelu, PRelu and
Clip(0, .) (ReLU6 included). The forward pass is unchanged; each such unit's output is routed through an
autograd function whose backward applies the rule. Units the rules cannot cover (HardSwish, GELU, SiLU,
Sigmoid ...) are reported so the result can name them in its caveats.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

UNCOVERED_KINDS = ("activation",)


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


@contextmanager
def relu_rule(model, rule: str):
    """Within the block, every relu-like unit of ``model`` back-propagates with ``rule``."""
    function = RULES[rule]

    def hook(_module, inputs, output):
        return function.apply(inputs[0], output.detach())

    handles = [model.submodule(layer.name).register_forward_hook(hook) for layer in model.layers if layer.kind == "relu"]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def uncovered_units(model) -> list[str]:
    """Op types of non-linear units the relu rules leave untouched (for the result's caveats)."""
    return sorted({layer.op for layer in model.layers if layer.kind in UNCOVERED_KINDS})
