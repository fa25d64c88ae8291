"""Robustness evaluated the way AutoAttack does (Croce & Hein 2020), and checked for gradient masking.

``ensemble`` runs, on the images still correctly classified after each step:

1. APGD on the cross-entropy (untargeted);
2. APGD on the targeted DLR loss (the margin with fewer than 4 classes) towards each of the top ``targets``
   other classes;
3. Square Attack (gradient-free, L-inf): a check. An image it breaks after both gradient attacks failed says
   the gradients mislead.

An image counts as broken only when onnxruntime (the model as exported) misclassifies the returned image.

``masking_findings`` turns the signs of gradient masking (Athalye, Carlini & Wagner 2018; Carlini et al. 2019,
"On Evaluating Adversarial Robustness") into sentences: success that falls as epsilon or the steps grow, a
very large epsilon that does not reach about 100 %, a gradient-free attack beating the gradient attacks, a
high share of exactly-zero gradients. A result with any of them never says or implies "robust".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from viz_server.errors import UserError
from viz_server.techniques import Context, Param
from viz_server_plugins.toolkit.apgd import apgd
from viz_server_plugins.toolkit.attack_losses import LOSSES
from viz_server_plugins.toolkit.attacks import fgsm, pgd, predicted_classes, unit_forward
from viz_server_plugins.toolkit.square import square_attack

ZERO_GRADIENT_WARN = 0.1
"""Share of (image, step) pairs with an exactly zero gradient above which a result is called masked."""
LARGE_EPSILON_SUCCESS = 0.95
"""Success an attack must reach at a very large budget; below it the attack, not the model, is the limit."""


@dataclass
class EnsembleResult:
    adversarial: torch.Tensor  # N x H x W x C unit space
    success: np.ndarray  # N bool: onnxruntime misclassifies the adversarial image (or the clean one already)
    broken_by: list[str | None]  # per image: "clean", "apgd-ce", "apgd-t", "square" or None
    zero_gradient_share: float
    gradient_free_only: int  # images only the gradient-free attack broke
    success_by_step: list[float] = field(default_factory=list)  # APGD-CE: share of images adversarial at each step
    square_used: bool = True


def large_epsilon(norm: str, unit: torch.Tensor) -> float:
    """A budget that lets an attack turn any image into a flat grey one: 0.5 in L-inf, 0.5 x sqrt(d) in L2."""
    return 0.5 if norm == "Linf" else 0.5 * float(unit[0].numel()) ** 0.5


def ensemble(
    model,
    unit: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    norm: str = "Linf",
    steps: int = 50,
    targets: int = 3,
    queries: int = 300,
    restarts: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> EnsembleResult:
    forward = unit_forward(model)
    generator = torch.Generator().manual_seed(seed)
    adversarial = unit.detach().clone()
    broken: list[str | None] = [None] * len(unit)
    clean = predicted_classes(model, unit) != labels
    for index in torch.nonzero(clean).flatten().tolist():
        broken[index] = "clean"
    zero = total = 0
    success_by_step: list[float] = []

    def standing() -> torch.Tensor:
        return torch.tensor([b is None for b in broken], dtype=torch.bool)

    def record(rows: torch.Tensor, images: torch.Tensor, name: str) -> None:
        hit = predicted_classes(model, images) != labels[rows]  # confirmed on onnxruntime
        for row, image, ok in zip(rows.tolist(), images, hit.tolist()):
            if ok and broken[row] is None:
                adversarial[row], broken[row] = image, name
            elif broken[row] is None:
                adversarial[row] = image

    rows = torch.nonzero(standing()).flatten()
    if len(rows) and epsilon > 0:
        if progress:
            progress("APGD-CE")
        run = apgd(forward, unit[rows], labels[rows], epsilon, norm, "ce", steps=steps, restarts=restarts, generator=generator)
        # not counted towards masking: cross-entropy's own gradient underflows on confident images (the loss saturates,
        # not the model); the logit losses below see the model's gradient
        success_by_step = [value * len(rows) / len(unit) for value in (run.success_by_step or [])]
        record(rows, run.adversarial, "apgd-ce")
    if epsilon > 0 and targets:
        with torch.no_grad():
            logits = forward(unit)
        ranked = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).argsort(1, descending=True)
        for rank in range(min(targets, logits.shape[1] - 1)):
            rows = torch.nonzero(standing()).flatten()
            if not len(rows):
                break
            if progress:
                progress(f"APGD-T (target {rank + 1})")
            run = apgd(forward, unit[rows], labels[rows], epsilon, norm, "dlr", targets=ranked[rows, rank], steps=steps, generator=generator)
            zero, total = zero + run.zero_gradient_steps, total + run.gradient_steps
            record(rows, run.adversarial, "apgd-t")
    gradient_free_only = 0
    square_used = norm == "Linf" and queries > 0
    rows = torch.nonzero(standing()).flatten()
    if square_used and len(rows) and epsilon > 0:
        if progress:
            progress("Square")
        spec = model.spec
        images, _, _ = square_attack(
            lambda batch: model.predict(spec.unit_to_model(batch)), unit[rows].numpy(), labels[rows].numpy(), epsilon, queries, np.random.default_rng(seed)
        )
        before = sum(b is not None for b in broken)
        record(rows, torch.from_numpy(images), "square")
        gradient_free_only = sum(b is not None for b in broken) - before
    success = np.array([b is not None for b in broken])
    return EnsembleResult(adversarial, success, broken, zero / total if total else 0.0, gradient_free_only, success_by_step, square_used)


def masking_findings(
    *,
    zero_gradient_share: float | None = None,
    gradient_free_only: int = 0,
    success_by_step: list[float] | None = None,
    curve: tuple[list[float], list[float]] | None = None,
    large: tuple[float, float] | None = None,
    tolerance: float = 0.0,
) -> list[str]:
    """Sentences naming every sign of gradient masking found; empty when none.

    ``curve``: (epsilons, success rates); ``large``: (a very large epsilon, the success reached there);
    ``tolerance``: how much success may fall before it counts (one image's share)."""
    found = []
    if zero_gradient_share is not None and zero_gradient_share > ZERO_GRADIENT_WARN:
        found.append(
            f"{zero_gradient_share:.0%} of the attack's gradient steps had an exactly zero gradient: the gradients are masked "
            "(a non-differentiable step, saturation), so gradient attacks cannot show how robust the model is."
        )
    if gradient_free_only:
        found.append(
            f"a gradient-free attack (Square) broke {gradient_free_only} image(s) that the gradient attacks could not: the "
            "gradients mislead, a sign of gradient masking."
        )
    if success_by_step and max(success_by_step) > success_by_step[-1] + tolerance:
        found.append(
            f"the attack's success fell as its steps grew (from {max(success_by_step):.0%} to {success_by_step[-1]:.0%}): the attack is unstable on this model."
        )
    if curve is not None:
        epsilons, rates = curve
        falls = [(a, b) for (a, ra), (b, rb) in zip(zip(epsilons, rates), zip(epsilons[1:], rates[1:])) if rb < ra - tolerance]
        if falls:
            a, b = falls[0]
            found.append(
                f"success fell as epsilon grew (from epsilon {a:.4g} to {b:.4g}): a working attack can only do better with a "
                "larger budget, so the attack is failing here."
            )
    if large is not None and large[1] < LARGE_EPSILON_SUCCESS:
        found.append(
            f"even at a very large epsilon ({large[0]:.3g}, enough to turn any image grey) the attack broke only {large[1]:.0%} "
            "of the images: the attack, not the model, is the limit."
        )
    return found


NO_GRADIENT_FREE_CHECK = "The gradient-free check (Square, L-inf only) did not run for this budget, so gradient masking cannot be ruled out."


def verdict(findings: list[str]) -> str:
    """The sentence a robustness result leads with."""
    if findings:
        return (
            "Robustness cannot be claimed from this result: " + " ".join(findings) + " Treat the accuracy figures as an upper bound "
            "that a stronger or adaptive attack would lower."
        )
    return (
        "No sign of gradient masking was found; the accuracy under attack is still only an upper bound on true robustness "
        "(a stronger attack can only lower it)."
    )


ATTACKS = ("ensemble", "apgd", "square", "pgd", "fgsm")
ATTACK_PARAMS = (
    Param("attack", "choice", "ensemble", "The AutoAttack-style ensemble (APGD-CE, APGD-T on DLR, Square), or one attack alone.", choices=ATTACKS),
    Param("loss", "choice", "margin", "Loss of apgd, pgd and fgsm: margin (Carlini & Wagner), dlr (Croce & Hein) or ce.", choices=LOSSES),
    Param("norm", "choice", "Linf", "Budget norm: L-inf or L2 ball (FGSM and Square are L-inf).", choices=("Linf", "L2")),
    Param("epsilon", "float", 8 / 255, "Budget in image space ([0, 1] per value): L-inf radius, or L2 radius.", minimum=0.0, maximum=100.0),
    Param("steps", "int", 50, "Iterations of APGD (each ensemble member) and PGD.", minimum=1, maximum=1000),
    Param("restarts", "int", 1, "APGD restarts from new random starts on the images not yet broken.", minimum=1, maximum=20),
    Param("targets", "int", 3, "Ensemble: target classes for targeted APGD on DLR (the top other classes).", minimum=0, maximum=20),
    Param("queries", "int", 300, "Square attack queries (the ensemble's gradient-free check; 0 = skip it).", minimum=0, maximum=20000),
    Param("step_size", "float", 2 / 255, "PGD step size (APGD sets its own).", minimum=0.0, maximum=10.0),
    Param("random_start", "bool", False, "PGD: start from a random point in the ball (seeded)."),
    Param("step_rule", "choice", "sign", "PGD steps along the gradient's sign or the L2-normalized gradient.", choices=("sign", "normalized")),
)
"""The parameters of ``run_attack``: a technique that attacks takes them as they are."""


def run_attack(
    ctx: Context, unit: torch.Tensor, labels: torch.Tensor, params: dict, targets: torch.Tensor | None = None, epsilon: float | None = None
) -> EnsembleResult:
    """The attack ``params`` choose (``ATTACK_PARAMS``) on unit-space images, untargeted (away from ``labels``) or
    towards ``targets``; success is confirmed on onnxruntime. A targeted ensemble is APGD on the targeted loss."""
    model = ctx.model
    epsilon = params["epsilon"] if epsilon is None else epsilon
    attack, norm = params["attack"], params["norm"]
    report = lambda message: ctx.progress(0, 1, f"{message}, epsilon {epsilon:.4g}")  # noqa: E731
    if attack == "ensemble" and targets is None:
        return ensemble(model, unit, labels, epsilon, norm, params["steps"], params["targets"], params["queries"], params["restarts"], ctx.seed, report)
    forward, counter, by_step = unit_forward(model), [0, 0], None
    wanted = labels if targets is None else targets
    if epsilon == 0:
        adversarial = unit.detach().clone()
    elif attack in ("ensemble", "apgd"):
        report("APGD")
        run = apgd(
            forward,
            unit,
            labels,
            epsilon,
            norm,
            params["loss"] if attack == "apgd" else "dlr",
            targets=targets,
            steps=params["steps"],
            restarts=params["restarts"],
            generator=ctx.torch_generator(),
        )
        adversarial, counter, by_step = run.adversarial, [run.zero_gradient_steps, run.gradient_steps], run.success_by_step
    elif attack == "square":
        if norm != "Linf" or targets is not None:
            raise UserError("the Square attack here is untargeted and L-inf; choose another attack for L2 or targeted budgets.")
        report("Square")
        images, _, _ = square_attack(
            lambda batch: model.predict(model.spec.unit_to_model(batch)), unit.numpy(), labels.numpy(), epsilon, params["queries"], ctx.rng
        )
        adversarial = torch.from_numpy(images)
    elif attack == "fgsm":
        adversarial = fgsm(forward, unit, wanted, epsilon, targets is not None, params["loss"], counter=counter)
    else:
        adversarial = pgd(
            forward,
            unit,
            wanted,
            epsilon,
            params["step_size"],
            params["steps"],
            norm,
            targets is not None,
            params["random_start"],
            ctx.torch_generator(),
            params["step_rule"],
            lambda step: ctx.progress(step + 1, params["steps"], f"PGD step {step + 1}"),
            params["loss"],
            counter=counter,
        )
    after = predicted_classes(model, adversarial)
    hit = (after != labels) if targets is None else (after == targets)
    broken = [attack if ok else None for ok in hit.tolist()]
    return EnsembleResult(adversarial, hit.numpy(), broken, counter[0] / counter[1] if counter[1] else 0.0, 0, by_step or [], False)
