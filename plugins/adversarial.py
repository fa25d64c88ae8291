"""Adversarial examples: by default the AutoAttack-style ensemble of Croce & Hein (2020) (APGD on the
cross-entropy, targeted APGD on the DLR loss, and the gradient-free Square attack as a check), or one attack:
APGD, Square, PGD (Madry et al. 2018) or FGSM (Goodfellow et al. 2015), with margin, DLR or CE losses on the
logits; untargeted or towards a class.

Shows, per image: the original, the adversarial image, and the perturbation amplified to be visible, with
the model's prediction before and after and the perturbation's L-inf and L2 size (in unit space, [0, 1]).
Every result is checked for gradient masking and leads with what it can and cannot support.
"""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import attacks, robust_evaluation
from viz_server_plugins.toolkit.optimization import display
from viz_server_plugins.toolkit.pictures import amplified


class Adversarial(Technique):
    name = "adversarial"
    title = "Adversarial examples"
    family = "robustness"
    tasks = ("classification",)
    version = "2"
    summary = "Small perturbations that change the prediction: the APGD/Square ensemble (Croce & Hein 2020), APGD, PGD or FGSM."
    params = (
        Param("target", "str", "", "Empty: untargeted (away from the predicted class); or a class (label or index) to push towards."),
    ) + robust_evaluation.ATTACK_PARAMS
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        ctx.progress(0, 1, "attacking")
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        before = attacks.predicted_classes(ctx.model, unit)
        targets = torch.full_like(before, spec.class_index(params["target"])) if params["target"].strip() else None
        outcome = robust_evaluation.run_attack(ctx, unit, before, params, targets)
        adversarial = outcome.adversarial
        after = attacks.predicted_classes(ctx.model, adversarial)
        success = torch.from_numpy(outcome.success)
        linf, l2 = attacks.perturbation_sizes(unit, adversarial)
        findings = robust_evaluation.masking_findings(
            zero_gradient_share=outcome.zero_gradient_share,
            gradient_free_only=outcome.gradient_free_only,
            success_by_step=outcome.success_by_step,
            tolerance=1 / len(unit),
        )
        caveats = [robust_evaluation.verdict(findings), "Budgets are in image space ([0, 1] per value): 8/255 in L-inf is a change no person notices."]
        if params["attack"] == "ensemble" and not outcome.square_used:
            caveats.append(robust_evaluation.NO_GRADIENT_FREE_CHECK)
        result = Result(
            arrays={"adversarial": spec.unit_to_model(adversarial.numpy()), "perturbation": (adversarial - unit).numpy()},
            metrics={
                "before": [spec.label(int(i)) for i in before],
                "after": [spec.label(int(i)) for i in after],
                "success": success.tolist(),
                "success_rate": round(float(success.float().mean()), 4),
                "broken_by": outcome.broken_by,
                "zero_gradient_share": round(outcome.zero_gradient_share, 4),
                "masking_findings": findings,
                "linf": [round(v, 6) for v in linf],
                "l2": [round(v, 6) for v in l2],
            },
            caveats=caveats,
        )
        for index in range(len(unit)):
            name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
            group = f"{index}: {name}"
            result.artifacts += [
                Artifact(
                    f"original_{index}.png",
                    f"original: {spec.label(int(before[index]))}",
                    data=png_bytes(display(spec, unit[index].numpy()), 128),
                    array="inputs",
                    group=group,
                ),
                Artifact(
                    f"adversarial_{index}.png",
                    f"adversarial: {spec.label(int(after[index]))}" + (f" (broken by {outcome.broken_by[index]})" if success[index] else " (not broken)"),
                    data=png_bytes(display(spec, adversarial[index].numpy()), 128),
                    array="adversarial",
                    group=group,
                ),
                Artifact(
                    f"perturbation_{index}.png",
                    f"perturbation, amplified (L-inf {linf[index]:.4f}, L2 {l2[index]:.3f})",
                    data=png_bytes(display(spec, amplified((adversarial - unit)[index].numpy())), 128),
                    array="perturbation",
                    group=group,
                ),
            ]
        return result


@hookimpl
def register_techniques():
    return [Adversarial()]
