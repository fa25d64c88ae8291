"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), for L-inf and L2 budgets, untargeted or targeted.

PGD with momentum (0.75) and a step size per image that starts at 2 x epsilon and is halved at checkpoints
(p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06) of the iterations) when fewer than 75 % of the
steps since the last checkpoint raised the loss, or when the step was not halved last time and the best loss
has not improved; a halving restarts from the best point found. Restarts try again from new random starts on
the images not yet broken. Any non-zero gradient moves the image (no absolute floor); steps whose gradient is
exactly zero are counted, since they are how gradient masking shows itself. A run stops early once every
image is broken (the first adversarial found is kept), or at a checkpoint when no gradient has moved any image.

All images live in unit space (N x H x W x C in [0, 1]); ``forward`` maps them to logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from viz_server_plugins.toolkit.attack_losses import BY_NAME
from viz_server_plugins.toolkit.attacks import strictly_inside

MOMENTUM = 0.75
RHO = 0.75


@dataclass
class AttackRun:
    """What one attack did on a batch."""

    adversarial: torch.Tensor  # N x H x W x C unit space: the adversarial image where one was found, else the best try
    success: torch.Tensor  # N bool, by the torch graph's predictions (confirm on onnxruntime before reporting)
    zero_gradient_steps: int = 0  # (image, step) pairs whose gradient was exactly zero
    gradient_steps: int = 0  # (image, step) pairs in all
    success_by_step: list[float] | None = None  # share of images whose *current* iterate is adversarial, per step


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step size: the first after 22 % of the steps, then intervals
    3 % shorter each time down to 6 % (whole steps, as the reference implementation counts them)."""
    interval, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, at = [], interval
    while at <= steps:
        marks.append(at)
        interval = max(interval - shrink, shortest)
        at += interval
    return marks


def _project(original: torch.Tensor, candidate: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    difference = candidate - original
    if norm == "Linf":
        difference = difference.clamp(-epsilon, epsilon)
    else:
        lengths = difference.flatten(1).norm(dim=1).clamp(min=1e-12)
        difference = difference * (epsilon / lengths).clamp(max=1.0).view(-1, *[1] * (difference.dim() - 1))
    return (original + difference).clamp(0.0, 1.0)


def _ascent(x: torch.Tensor, gradient: torch.Tensor, step: torch.Tensor, norm: str) -> torch.Tensor:
    shape = (-1, *[1] * (x.dim() - 1))
    if norm == "Linf":
        return x + step.view(shape) * gradient.sign()
    lengths = gradient.flatten(1).norm(dim=1).clamp(min=1e-12)
    return x + step.view(shape) * gradient / lengths.view(shape)


def _random_start(original: torch.Tensor, epsilon: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.rand(original.shape, generator=generator) * 2 - 1 if norm == "Linf" else torch.randn(original.shape, generator=generator)
    if norm == "Linf":
        start = original + epsilon * noise
    else:
        lengths = noise.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (noise.dim() - 1))
        start = original + epsilon * noise / lengths
    return start.clamp(0.0, 1.0)


def apgd(
    forward: Callable[[torch.Tensor], torch.Tensor],
    unit: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    norm: str = "Linf",
    loss: str = "ce",
    targets: torch.Tensor | None = None,
    steps: int = 100,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
) -> AttackRun:
    """Run APGD; ``targets`` (one class per image) makes it targeted. Returns the adversarial images found."""
    loss_fn = BY_NAME[loss]
    original = unit.detach()
    found = original.clone()
    success = torch.zeros(len(original), dtype=torch.bool)
    zero_steps = total_steps = 0
    success_by_step = [0.0] * steps
    marks = set(checkpoints(steps))

    def evaluate(x: torch.Tensor, rows: torch.Tensor):
        inputs = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = forward(inputs)
            values = loss_fn(logits, labels[rows], None if targets is None else targets[rows])
            (gradient,) = torch.autograd.grad(values.sum(), inputs)
        hit = logits.detach().argmax(1) != labels[rows] if targets is None else logits.detach().argmax(1) == targets[rows]
        return values.detach(), gradient.detach(), hit

    for restart in range(restarts):
        rows = torch.nonzero(~success).flatten()
        if not len(rows):
            break
        x0 = original[rows]
        x = _random_start(x0, epsilon, norm, generator)
        best_loss, gradient, hit = evaluate(x, rows)
        best_x, best_gradient = x.clone(), gradient.clone()
        step = torch.full((len(rows),), 2.0 * epsilon)
        previous = x.clone()
        raised = torch.zeros(len(rows))
        loss_at_mark = best_loss.clone()
        halved_last = torch.ones(len(rows), dtype=torch.bool)
        last_mark = 0
        current_loss = best_loss.clone()
        moved_ever = torch.zeros(len(rows), dtype=torch.bool)
        for index in range(steps):
            zero = gradient.flatten(1).abs().amax(1) == 0
            zero_steps += int(zero.sum())
            total_steps += len(rows)
            moved_ever |= ~zero
            stepped = _project(x0, _ascent(x, gradient, step, norm), epsilon, norm)
            weight = 1.0 if index == 0 else MOMENTUM
            moved = _project(x0, x + weight * (stepped - x) + (1 - weight) * (x - previous), epsilon, norm)
            previous, x = x, moved
            values, gradient, hit = evaluate(x, rows)
            newly = hit & ~success[rows]
            found[rows[newly]] = x[newly]
            success[rows[hit]] = True
            if restart == 0:
                success_by_step[index] = float(hit.sum()) / len(original)
            raised += (values > current_loss).float()
            current_loss = values
            better = values > best_loss
            best_x[better], best_gradient[better], best_loss[better] = x[better], gradient[better], values[better]
            if index + 1 in marks:
                oscillating = raised <= RHO * (index + 1 - last_mark)
                stalled = ~halved_last & (loss_at_mark >= best_loss)
                halve = oscillating | stalled
                step[halve] /= 2
                x[halve], gradient[halve] = best_x[halve], best_gradient[halve]
                halved_last, loss_at_mark, raised, last_mark = halve, best_loss.clone(), torch.zeros(len(rows)), index + 1
            if on_step is not None:
                on_step(index)
            if bool(success[rows].all()) or (index + 1 in marks and not bool(moved_ever.any())):
                break  # every image is broken (the first adversarial is kept), or no gradient ever moved one: more steps change nothing
        unbroken = ~success[rows]
        found[rows[unbroken]] = best_x[unbroken]
    adversarial = strictly_inside(original, found, epsilon, norm).clamp(0.0, 1.0)
    return AttackRun(adversarial, success, zero_steps, total_steps, success_by_step)
