"""Adversarial attacks in image space (lecture notes, "Testing Robustness").

Every attack works on images in unit space ([0, 1] per value, the model's channel order) and reaches the
model through the spec's mapping, so budgets mean the same on every model whatever its normalization, and
perturbed images never leave the valid input range.

- FGSM (Goodfellow, Shlens & Szegedy 2015): one step of size epsilon along the sign of the loss gradient.
- PGD (Madry et al. 2018): repeated steps, each projected back onto the L-inf or L2 ball around the
  original image, optionally from a random start. Steps follow the gradient's sign (as captum.robust does);
  ``step_rule="normalized"`` takes the L2-normalized gradient instead, the usual choice for L2 attacks.
  Losses are on the logits (``attack_losses``: margin by default, DLR, or cross-entropy); any non-zero gradient
  moves a pixel.
- Fooling image: gradient ascent on a chosen wrong class until the model predicts it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from viz_server_plugins.toolkit.attack_losses import BY_NAME
from viz_server_plugins.toolkit.optimization import to_model_space

CAPTUM_ZERO_GRADIENT = 1e-6
"""captum.robust leaves elements whose gradient is below this unchanged; our attacks move on any non-zero
gradient (``zero_gradient=0``) and pass this only to reproduce captum.robust exactly."""


def unit_forward(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """Scores of the model for an N x H x W x C batch in unit space."""
    return lambda unit: model.module(to_model_space(model.spec, unit))


def predicted_classes(model, unit: torch.Tensor) -> torch.Tensor:
    """Each unit-space image's predicted class: forward-only, so on onnxruntime (see benchmarks/sweeps.py)."""
    return torch.from_numpy(model.predict(model.spec.unit_to_model(unit.detach().numpy())).argmax(1))


def loss_gradient(
    forward, unit: torch.Tensor, labels: torch.Tensor, targeted: bool = False, loss: str = "margin", counter: list[int] | None = None
) -> torch.Tensor:
    """Gradient of the attack loss to maximize (``attack_losses``) with respect to the unit-space images: away
    from ``labels``, or towards them when ``targeted``. ``counter`` ([zero, all]) counts images whose gradient is
    exactly zero."""
    loss_fn = BY_NAME["margin" if targeted and loss == "dlr" else loss]  # targeted DLR needs the true class too
    inputs = unit.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(inputs)
        values = loss_fn(logits, labels, labels) if targeted else loss_fn(logits, labels)
        (gradient,) = torch.autograd.grad(values.sum(), inputs)
    if counter is not None:
        counter[0] += int((gradient.flatten(1).abs().amax(1) == 0).sum())
        counter[1] += len(gradient)
    return gradient


def signed_step(
    forward,
    unit: torch.Tensor,
    labels: torch.Tensor,
    size: float,
    targeted: bool,
    loss: str = "margin",
    zero_gradient: float = 0.0,
    counter: list[int] | None = None,
) -> torch.Tensor:
    """One step along the loss gradient's sign (towards ``labels`` when targeted), not yet clamped. Elements whose
    gradient magnitude is not above ``zero_gradient`` stay (0: only exactly-zero ones)."""
    gradient = loss_gradient(forward, unit, labels, targeted, loss, counter)
    return torch.where(gradient.abs() > zero_gradient, unit + size * gradient.sign(), unit).detach()


def fgsm(
    forward,
    unit: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    targeted: bool = False,
    loss: str = "margin",
    zero_gradient: float = 0.0,
    counter: list[int] | None = None,
) -> torch.Tensor:
    """One signed-gradient step of size epsilon, clamped to the valid range."""
    return signed_step(forward, unit, labels, epsilon, targeted, loss, zero_gradient, counter).clamp(0.0, 1.0)


def project(original: torch.Tensor, perturbed: torch.Tensor, radius: float, norm: str) -> torch.Tensor:
    """Back onto the ball around ``original`` (as captum.robust: clamp for L-inf, torch.renorm for L2)."""
    difference = perturbed - original
    if norm == "Linf":
        return original + difference.clamp(-radius, radius)
    return original + torch.renorm(difference, 2, 0, radius)


def strictly_inside(original: torch.Tensor, perturbed: torch.Tensor, radius: float, norm: str) -> torch.Tensor:
    """The final guarantee: L2 scale computed in float64 and kept a hair inside the radius, so float32
    rounding can never put a returned image outside the ball."""
    difference = perturbed - original
    if norm == "Linf":
        return original + difference.clamp(-radius, radius)
    norms = difference.flatten(1).double().norm(dim=1)
    # storing original + difference in float32 rounds each value by up to half an ulp of 1: leave room for it
    inside = max(radius * (1 - 1e-6) - difference[0].numel() ** 0.5 * 2.0**-24, 0.0)
    scale = torch.where(norms > inside, inside / norms.clamp(min=1e-30), torch.ones_like(norms))
    return original + difference * scale.to(difference.dtype).view(-1, *[1] * (difference.dim() - 1))


def pgd(
    forward,
    unit: torch.Tensor,
    labels: torch.Tensor,
    radius: float,
    step_size: float,
    steps: int,
    norm: str = "Linf",
    targeted: bool = False,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    step_rule: str = "sign",
    on_step: Callable[[int], None] | None = None,
    loss: str = "margin",
    zero_gradient: float = 0.0,
    counter: list[int] | None = None,
) -> torch.Tensor:
    """Projected gradient descent inside the ``norm`` ball of ``radius`` around ``unit``, within [0, 1], on the
    ``loss`` of ``attack_losses`` (captum.robust's PGD is ``loss="ce", zero_gradient=CAPTUM_ZERO_GRADIENT``)."""
    original = unit.detach()
    current = original.clone()
    if random_start:
        if norm == "Linf":
            noise = (torch.rand(original.shape, generator=generator) * 2 - 1) * radius
        else:
            direction = F.normalize(torch.randn(original.shape, generator=generator).flatten(1)).view(original.shape)
            lengths = torch.rand(len(original), generator=generator) ** (1.0 / original[0].numel()) * radius
            noise = direction * lengths.view(-1, *[1] * (original.dim() - 1))
        current = (original + noise).clamp(0.0, 1.0)
    for step in range(steps):
        if step_rule == "sign":
            current = signed_step(forward, current, labels, step_size, targeted, loss, zero_gradient, counter)
        else:
            gradient = loss_gradient(forward, current, labels, targeted, loss, counter)
            current = current + step_size * F.normalize(gradient.flatten(1)).view(gradient.shape)
        current = project(original, current, radius, norm).clamp(0.0, 1.0).detach()  # step, project, then clamp
        if on_step is not None:
            on_step(step)
    return strictly_inside(original, current, radius, norm).clamp(0.0, 1.0)


def fooling_image(
    forward, unit: torch.Tensor, targets: torch.Tensor, step_size: float, max_steps: int, on_step: Callable[[int], None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascend each image's target score until the model predicts it; returns (images, steps needed or -1)."""
    current = unit.detach().clone()
    needed = torch.full((len(unit),), -1, dtype=torch.long)
    for step in range(max_steps + 1):
        inputs = current.clone().requires_grad_(True)
        with torch.enable_grad():
            scores = forward(inputs)  # one forward per step serves the check and the gradient
        reached = (scores.detach().argmax(1) == targets) & (needed < 0)
        needed[reached] = step
        active = needed < 0
        if not active.any() or step == max_steps:
            break
        (gradient,) = torch.autograd.grad(scores.gather(1, targets[:, None]).sum(), inputs)
        stepped = (current + step_size * gradient.sign()).clamp(0.0, 1.0)
        current = torch.where(active.view(-1, *[1] * (current.dim() - 1)), stepped, current).detach()
        if on_step is not None:
            on_step(step)
    return current, needed


def perturbation_sizes(original: torch.Tensor, perturbed: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image L-inf and L2 size of a perturbation, in unit space."""
    difference = (perturbed - original).flatten(1)
    return difference.abs().amax(1).tolist(), difference.norm(dim=1).tolist()
