"""Attacking a model behind an input-transformation defence adaptively (Athalye, Carlini & Wagner 2018,
"Obfuscated Gradients Give a False Sense of Security").

- BPDA (Backward Pass Differentiable Approximation): the forward pass runs the real, non-differentiable
  transformation (JPEG, median filtering); the backward pass treats it as the identity.
- EOT (Expectation over Transformation): for a random transformation (added noise), the model sees several
  independent draws and the attack follows the average.

``defended_forward`` gives the unit-space logits function an attack (APGD) then runs against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from viz_server_plugins.toolkit.attacks import unit_forward


class StraightThrough(torch.autograd.Function):
    """Forward: ``transform`` on the values (numpy, unit space). Backward: the identity (BPDA)."""

    @staticmethod
    def forward(ctx, images, transform):
        return torch.from_numpy(np.ascontiguousarray(transform(images.detach().cpu().numpy()), dtype=np.float32)).to(images)

    @staticmethod
    def backward(ctx, gradient):
        return gradient, None


def defended_forward(model, transform: Callable[[np.ndarray], np.ndarray], random: bool = False, samples: int = 8) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits of ``model`` behind ``transform`` for unit-space images, differentiable by BPDA; a random
    transform is averaged over ``samples`` draws (EOT)."""
    forward = unit_forward(model)

    def once(unit: torch.Tensor) -> torch.Tensor:
        return forward(StraightThrough.apply(unit, transform))

    if not random:
        return once
    return lambda unit: torch.stack([once(unit) for _ in range(samples)]).mean(0)
