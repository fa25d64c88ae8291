"""Robustness curve over a labeled image set: accuracy against the attack budget, for FGSM and PGD.

One call sweeps every epsilon. For each attack it reports accuracy per epsilon, the attack success rate on
the images the model got right, and the smallest epsilon that flips each image. Labels come from the
image set's class folders; an unlabeled set uses the model's clean predictions (the curve then measures
how stable the predictions are).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import attacks
from viz_server_plugins.toolkit.objectives import reference_labels


def parse_epsilons(text: str) -> list[float]:
    try:
        values = sorted({float(Fraction(part.strip())) for part in text.split(",") if part.strip()})
    except (ValueError, ZeroDivisionError):
        raise UserError(f"epsilons {text!r} must be comma-separated numbers or fractions such as 0,1/255,2/255.") from None
    if not values or values[0] < 0 or len(values) > 50:
        raise UserError("give between 1 and 50 non-negative epsilons.")
    return values


class RobustnessCurve(Technique):
    name = "robustness_curve"
    title = "Robustness curve"
    family = "robustness"
    tasks = ("classification",)
    suites = ("robustness",)
    summary = "Accuracy against the attack budget over an image set, for FGSM and PGD, with the smallest flipping epsilon per image."
    params = (
        Param("epsilons", "str", "0,1/255,2/255,4/255,8/255,16/255", "Budgets (image space, [0, 1] per value), comma-separated; fractions allowed."),
        Param("attacks", "str", "fgsm,pgd", "Which attacks to sweep: fgsm, pgd or both (comma-separated)."),
        Param("norm", "choice", "Linf", "Budget norm for PGD.", choices=("Linf", "L2")),
        Param("steps", "int", 10, "PGD steps (step size = 2.5 x epsilon / steps).", minimum=1, maximum=200),
    )
    inputs = ("image_set",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        epsilons = parse_epsilons(params["epsilons"])
        chosen = [a.strip() for a in params["attacks"].split(",") if a.strip()]
        if not chosen or any(a not in ("fgsm", "pgd") for a in chosen):
            raise UserError("attacks must be fgsm, pgd or fgsm,pgd.")
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        forward = attacks.unit_forward(ctx.model)
        clean = attacks.predicted_classes(ctx.model, unit)
        labels, source = reference_labels(ctx, clean)
        correct = clean == labels
        accuracy = {attack: [] for attack in chosen}
        smallest = {attack: np.full(len(unit), np.nan) for attack in chosen}
        total, done = len(chosen) * len(epsilons), 0
        for attack in chosen:
            for epsilon in epsilons:
                if epsilon == 0:
                    adversarial = unit
                elif attack == "fgsm":
                    adversarial = attacks.fgsm(forward, unit, labels, epsilon)
                else:
                    adversarial = attacks.pgd(forward, unit, labels, epsilon, 2.5 * epsilon / params["steps"], params["steps"], params["norm"])
                still = attacks.predicted_classes(ctx.model, adversarial) == labels
                accuracy[attack].append(float(still.float().mean()))
                flipped = (correct & ~still).numpy() & np.isnan(smallest[attack])  # numpy bools: a mask, not indices
                smallest[attack][flipped] = epsilon
                done += 1
                ctx.progress(done, total, f"{attack} epsilon {epsilon:.4g}: accuracy {accuracy[attack][-1]:.3f}")
        rows = [["epsilon"] + [f"accuracy ({a})" for a in chosen]] + [
            [round(e, 6)] + [round(accuracy[a][i], 4) for a in chosen] for i, e in enumerate(epsilons)
        ]
        success = {a: round(float(1 - accuracy[a][-1] / max(float(correct.float().mean()), 1e-12)), 4) if correct.any() else None for a in chosen}
        return Result(
            artifacts=[
                Artifact(
                    "robustness_curve.png",
                    f"accuracy against epsilon ({params['norm']} for PGD); labels: {source}",
                    kind="plot",
                    data=self._plot(epsilons, accuracy),
                    array="accuracy",
                    group="curve",
                ),
                Artifact("robustness.csv", "accuracy per epsilon", kind="table", rows=rows, group="curve"),
            ],
            arrays={
                "epsilons": np.asarray(epsilons),
                "accuracy": np.asarray([accuracy[a] for a in chosen]),
                **{f"smallest_flip_{a}": smallest[a] for a in chosen},
            },
            metrics={
                "labels": source,
                "clean_accuracy": round(float(correct.float().mean()), 4),
                "accuracy": {a: [round(v, 4) for v in accuracy[a]] for a in chosen},
                "success_rate_at_largest": success,
                "median_smallest_flip": {a: (None if np.isnan(smallest[a]).all() else round(float(np.nanmedian(smallest[a])), 6)) for a in chosen},
            },
            caveats=[
                "Accuracy under attack is an upper bound on true robustness: a stronger attack can only lower it.",
                "Epsilon is measured in image space ([0, 1] per value), the same for every model.",
            ],
        )

    @staticmethod
    def _plot(epsilons: list[float], accuracy: dict[str, list[float]]) -> bytes:
        pyplot = plotting()

        figure, axis = pyplot.subplots(figsize=(4.2, 3.0), dpi=100)
        for attack, values in accuracy.items():
            axis.plot([e * 255 for e in epsilons], values, marker="o", label=attack.upper())
        axis.set_xlabel("epsilon (x 1/255)")
        axis.set_ylabel("accuracy")
        axis.set_ylim(0, 1.02)
        axis.legend()
        return figure_png(figure)


@hookimpl
def register_techniques():
    return [RobustnessCurve()]
