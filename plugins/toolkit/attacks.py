"""Adversarial attacks in image space (lecture notes, "Testing Robustness").

Every attack works on images in unit space ([0, 1] per value, the model's channel order) and reaches the
model through the spec's mapping, so budgets mean the same on every model whatever its normalization, and
perturbed images never leave the valid input range.

- FGSM (Goodfellow, Shlens & Szegedy 2015): one step of size epsilon along the sign of the loss gradient.
- PGD (Madry et al. 2018): repeated steps, each projected back onto the L-inf or L2 ball around the
  original image, optionally from a random start. Steps follow the gradient's sign (as captum.robust does);
  ``step_rule="normalized"`` takes the L2-normalized gradient instead, the usual choice for L2 attacks.
- Fooling image: gradient ascent on a chosen wrong class until the model predicts it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from viz_server.techniques import Context, Param
from viz_server_plugins.toolkit.optimization import to_model_space

ZERO_GRADIENT = 1e-6  # captum.robust leaves elements whose gradient is below this unchanged

ATTACK_PARAMS = (
    Param("attack", "choice", "pgd", "FGSM (one step) or PGD (iterated, projected).", choices=("fgsm", "pgd")),
    Param("norm", "choice", "Linf", "PGD's budget: L-inf or L2 ball (FGSM is L-inf).", choices=("Linf", "L2")),
    Param("epsilon", "float", 8 / 255, "Budget in image space ([0, 1] per value): L-inf radius, or L2 radius.", minimum=0.0, maximum=100.0),
    Param("step_size", "float", 2 / 255, "PGD step size.", minimum=0.0, maximum=10.0),
    Param("steps", "int", 10, "PGD steps.", minimum=1, maximum=1000),
    Param("random_start", "bool", False, "PGD: start from a random point in the ball (seeded)."),
    Param(
        "step_rule", "choice", "sign", "PGD steps along the gradient's sign (as captum.robust) or the L2-normalized gradient.", choices=("sign", "normalized")
    ),
)
"""The parameters of ``run_attack``: a technique that attacks takes them as they are."""


def run_attack(ctx: Context, unit: torch.Tensor, labels: torch.Tensor, params: dict, targeted: bool, epsilon: float | None = None) -> torch.Tensor:
    """FGSM or PGD as ``params`` (``ATTACK_PARAMS``) say, on unit-space images, with progress reported to ``ctx``."""
    forward = unit_forward(ctx.model)
    epsilon = params["epsilon"] if epsilon is None else epsilon
    if params["attack"] == "fgsm":
        return fgsm(forward, unit, labels, epsilon, targeted)
    return pgd(
        forward,
        unit,
        labels,
        epsilon,
        params["step_size"],
        params["steps"],
        params["norm"],
        targeted,
        params["random_start"],
        ctx.torch_generator(),
        params["step_rule"],
        on_step=lambda step: ctx.progress(step + 1, params["steps"], f"PGD step {step + 1}"),
    )


def unit_forward(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """Scores of the model for an N x H x W x C batch in unit space."""
    return lambda unit: model.module(to_model_space(model.spec, unit))


def predicted_classes(model, unit: torch.Tensor) -> torch.Tensor:
    """Each unit-space image's predicted class: forward-only, so on onnxruntime (see benchmarks/sweeps.py)."""
    return torch.from_numpy(model.predict(model.spec.unit_to_model(unit.detach().numpy())).argmax(1))


def loss_gradient(forward, unit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy loss with respect to the unit-space images."""
    inputs = unit.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(forward(inputs), labels, reduction="none").sum()
        (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient


def signed_step(forward, unit: torch.Tensor, labels: torch.Tensor, size: float, targeted: bool) -> torch.Tensor:
    """One step along the loss gradient's sign (towards ``labels`` when targeted), not yet clamped."""
    gradient = loss_gradient(forward, unit, labels)
    direction = -1.0 if targeted else 1.0
    return torch.where(gradient.abs() > ZERO_GRADIENT, unit + direction * size * gradient.sign(), unit).detach()


def fgsm(forward, unit: torch.Tensor, labels: torch.Tensor, epsilon: float, targeted: bool = False) -> torch.Tensor:
    """One signed-gradient step of size epsilon, clamped to the valid range."""
    return signed_step(forward, unit, labels, epsilon, targeted).clamp(0.0, 1.0)


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
) -> torch.Tensor:
    """Projected gradient descent inside the ``norm`` ball of ``radius`` around ``unit``, within [0, 1]."""
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
            current = signed_step(forward, current, labels, step_size, targeted)
        else:
            gradient = loss_gradient(forward, current, labels)
            unit_gradient = F.normalize(gradient.flatten(1)).view(gradient.shape)
            current = current + (-1.0 if targeted else 1.0) * step_size * unit_gradient
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
