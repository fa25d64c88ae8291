"""Robustness curve over a labeled image set: accuracy against the attack budget.

One call sweeps every epsilon with each chosen attack, by default the AutoAttack-style ensemble (Croce & Hein
2020: APGD-CE, targeted APGD on DLR, Square), each epsilon attacked independently. For each attack it reports
accuracy per epsilon, the success rate on the images the model got right, and the smallest epsilon that flips
each image, and it checks itself for gradient masking: success must not fall as epsilon grows, a very large
epsilon must break about every image, a gradient-free attack must not beat the gradient ones, and exactly-zero
gradients must be rare. Labels come from the image set's class folders; an unlabeled set uses the model's
clean predictions (the curve then measures how stable the predictions are).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Param, Result, Technique, headline, proportion_headline, sample_headline
from viz_server_plugins.toolkit import attacks, robust_evaluation
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
    expected_cost = 10.0
    version = "2"
    summary = "Accuracy against the attack budget over an image set (the APGD/Square ensemble by default), checked for gradient masking."
    params = (
        Param("epsilons", "str", "0,1/255,2/255,4/255,8/255,16/255", "Budgets (image space, [0, 1] per value), comma-separated; fractions allowed."),
        Param("attacks", "str", "ensemble", f"Which attacks to sweep, comma-separated: {', '.join(robust_evaluation.ATTACKS)}."),
    ) + tuple(param for param in robust_evaluation.ATTACK_PARAMS if param.name not in ("attack", "epsilon"))
    inputs = ("image_set",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        epsilons = parse_epsilons(params["epsilons"])
        chosen = [a.strip() for a in params["attacks"].split(",") if a.strip()]
        if not chosen or any(a not in robust_evaluation.ATTACKS for a in chosen):
            raise UserError(f"attacks must be a comma-separated choice of {', '.join(robust_evaluation.ATTACKS)}.")
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        clean = attacks.predicted_classes(ctx.model, unit)
        labels, source = reference_labels(ctx, clean)
        correct = (clean == labels).numpy()
        large = robust_evaluation.large_epsilon(params["norm"], unit)
        accuracy = {attack: [] for attack in chosen}
        success = {attack: [] for attack in chosen}
        smallest = {attack: np.full(len(unit), np.nan) for attack in chosen}
        findings: dict[str, list[str]] = {}
        total, done = len(chosen) * (len(epsilons) + 1), 0
        for attack in chosen:
            settings = {**params, "attack": attack}
            zero, gradient_free, by_large = [], 0, 0.0
            for epsilon in [*epsilons, large]:
                outcome = robust_evaluation.run_attack(ctx, unit, labels, settings, epsilon=epsilon) if epsilon > 0 else None
                broken = outcome.success if outcome is not None else ~correct
                rate = float((broken & correct).sum() / max(correct.sum(), 1))
                done += 1
                ctx.progress(done, total, f"{attack} epsilon {epsilon:.4g}: success {rate:.3f}")
                if outcome is not None:
                    zero.append(outcome.zero_gradient_share)
                    gradient_free += outcome.gradient_free_only
                if epsilon == large:
                    by_large = rate
                    continue
                accuracy[attack].append(float((~broken & correct).mean()))
                success[attack].append(rate)
                flipped = correct & broken & np.isnan(smallest[attack])
                smallest[attack][flipped] = epsilon
            findings[attack] = robust_evaluation.masking_findings(
                zero_gradient_share=max(zero, default=0.0),
                gradient_free_only=gradient_free,
                curve=(epsilons, success[attack]),
                large=(large, by_large) if correct.any() else None,
                tolerance=1 / max(int(correct.sum()), 1),
            )
        rows = [["epsilon"] + [f"accuracy ({a})" for a in chosen]] + [
            [round(e, 6)] + [round(accuracy[a][i], 4) for a in chosen] for i, e in enumerate(epsilons)
        ]
        caveats = [f"{attack}: {robust_evaluation.verdict(found)}" for attack, found in findings.items()]
        if "ensemble" in chosen and params["norm"] != "Linf":
            caveats.append(robust_evaluation.NO_GRADIENT_FREE_CHECK)
        caveats.append("Epsilon is measured in image space ([0, 1] per value), the same for every model.")
        return Result(
            artifacts=[
                Artifact(
                    "robustness_curve.png",
                    f"accuracy against epsilon ({params['norm']}); labels: {source}",
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
                "norm": params["norm"],
                "clean_accuracy": round(float(correct.mean()), 4),
                "epsilons": [round(e, 6) for e in epsilons],
                "accuracy": {a: [round(v, 4) for v in accuracy[a]] for a in chosen},
                "success_rate": {a: [round(v, 4) for v in success[a]] for a in chosen},
                "success_rate_at_largest": {a: (success[a][-1] if correct.any() else None) for a in chosen},
                "median_smallest_flip": {a: (None if np.isnan(smallest[a]).all() else round(float(np.nanmedian(smallest[a])), 6)) for a in chosen},
                "large_epsilon": round(large, 6),
                "masking_findings": findings,
                "masking_free": {a: not found for a, found in findings.items()},
                "headline": self._headline(epsilons, accuracy, smallest, findings, correct),
            },
            caveats=caveats,
        )

    @staticmethod
    def _headline(epsilons, accuracy, smallest, findings, correct) -> dict:
        """Clean accuracy, the worst accuracy over every chosen attack at the standard budget (8/255 when measured,
        else the largest), and the median of each image's smallest flipping epsilon over all attacks; robustness
        figures are withheld when any attack shows gradient masking."""
        budget = min(epsilons, key=lambda e: abs(e - 8 / 255)) if any(abs(e - 8 / 255) < 1e-9 for e in epsilons) else max(epsilons)
        masked = [attack for attack, found in findings.items() if found]
        note = f"cannot be claimed: {masked[0]}: {findings[masked[0]][0]}" if masked else ""
        worst, weakest = min((accuracy[attack][epsilons.index(budget)], attack) for attack in accuracy)
        flips = np.nanmin(np.stack([smallest[attack] for attack in smallest]), axis=0)[correct] if correct.any() else np.array([])
        images = len(correct)
        strongest = f"accuracy under the strongest attack ({weakest}, epsilon {budget:.4f})"
        flip_label = "median epsilon that flips a correct prediction"
        return {
            "accuracy": proportion_headline(int(correct.sum()), images, "accuracy on the labeled images"),
            "robust_accuracy": headline(None, strongest, "higher", note, count=images)
            if masked
            else proportion_headline(int(round(worst * images)), images, strongest),
            "median_flip_epsilon": (
                headline(None, flip_label, "higher", note or "no correct prediction flipped", count=int(np.isfinite(flips).sum()))
                if masked or flips.size == 0 or np.isnan(flips).all()
                else sample_headline(flips, flip_label, "higher", statistic="median")
            ),
        }

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
