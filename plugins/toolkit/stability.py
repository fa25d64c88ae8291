"""Two properties a map should have whatever the model, measured on the map function itself.

- **Input invariance** (Kindermans et al. 2019, "The (Un)reliability of Saliency Methods"): add a constant to
  every input and subtract it again inside the model; the model is the same function, so the map must not
  change. Methods that multiply by the input (gradient x input, integrated gradients from a zero baseline) fail.
  Reported as the relative L1 change of the map; ``INVARIANT_BELOW`` counts as invariant.
- **Max-sensitivity** (Yeh, Hsieh, Suggala, Inouye & Ravikumar 2019, "On the (In)fidelity and Sensitivity of
  Explanations"): the largest relative change ``||map(x + d) - map(x)|| / ||map(x)||`` over uniform
  perturbations ``d`` in an L-inf ball, by Monte Carlo (as Quantus' ``MaxSensitivity``). Lower is more stable.

A map function is ``map_fn(model, images, objective) -> N x H x W`` (objective already chosen on the clean
images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

INVARIANT_BELOW = 1e-3
SHIFT = 0.1
"""The constant added to the input, as a fraction of its value range."""

MapFunction = Callable[..., np.ndarray]


def input_invariance(map_fn: MapFunction, model, images: torch.Tensor, objective, original: np.ndarray | None = None) -> np.ndarray:
    """Per image: relative L1 change of the map when the input is shifted by a constant the model removes again."""
    low, high = model.spec.unit_bounds()
    shift = torch.from_numpy(np.asarray((high - low) * SHIFT, np.float32)).to(images)

    def remove_shift(_module, args):
        return (args[0] - shift, *args[1:])

    original = original if original is not None else map_fn(model, images, objective)
    handle = model.module.register_forward_pre_hook(remove_shift)
    try:
        shifted = map_fn(model, images + shift, objective)
    finally:
        handle.remove()
    change = np.abs(np.asarray(shifted, np.float64) - original).reshape(len(images), -1).sum(1)
    return change / np.maximum(np.abs(np.asarray(original, np.float64)).reshape(len(images), -1).sum(1), 1e-30)


def uniform_noise(model, images: torch.Tensor, samples: int, radius: float, seed: int) -> np.ndarray:
    """samples x (images' shape): uniform noise in the L-inf ball of ``radius`` x the input's value range."""
    low, high = model.spec.unit_bounds()
    spread = np.abs(high - low) * radius
    draws = np.random.default_rng(seed).uniform(-1.0, 1.0, (samples, *images.shape))
    return (draws * spread).astype(np.float32)


def max_sensitivity(map_fn: MapFunction, model, images: torch.Tensor, objective, noise: np.ndarray, original: np.ndarray | None = None) -> np.ndarray:
    """Per image: max over the perturbations ``noise`` (samples x images' shape) of the relative Frobenius change."""
    original = np.asarray(original if original is not None else map_fn(model, images, objective), np.float64).reshape(len(images), -1)
    worst = np.zeros(len(images))
    denominator = np.maximum(np.linalg.norm(original, axis=1), 1e-30)
    for perturbation in noise:
        perturbed = np.asarray(map_fn(model, images + torch.from_numpy(perturbation).to(images), objective), np.float64).reshape(len(images), -1)
        worst = np.maximum(worst, np.linalg.norm(perturbed - original, axis=1) / denominator)
    return worst
