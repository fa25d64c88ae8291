"""Adversarial examples with FGSM or PGD (L-inf or L2), targeted or not, on a batch of images.

Shows, per image: the original, the adversarial image, and the perturbation amplified to be visible, with
the model's prediction before and after and the perturbation's L-inf and L2 size (in unit space, [0, 1]).
"""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import attacks
from viz_server_plugins.toolkit.optimization import display
from viz_server_plugins.toolkit.pictures import amplified


class Adversarial(Technique):
    name = "adversarial"
    title = "Adversarial examples"
    family = "robustness"
    tasks = ("classification",)
    summary = "Small perturbations that change the prediction: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018)."
    params = (
        Param("target", "str", "", "Empty: untargeted (away from the predicted class); or a class (index or label) to push towards."),
    ) + attacks.ATTACK_PARAMS
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        ctx.progress(0, 1, "attacking")
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        before = attacks.predicted_classes(ctx.model, unit)
        targeted = bool(params["target"].strip())
        labels = torch.full_like(before, spec.class_index(params["target"])) if targeted else before
        adversarial = attacks.run_attack(ctx, unit, labels, params, targeted)
        after = attacks.predicted_classes(ctx.model, adversarial)
        success = (after == labels) if targeted else (after != before)
        linf, l2 = attacks.perturbation_sizes(unit, adversarial)
        result = Result(
            arrays={"adversarial": spec.unit_to_model(adversarial.numpy()), "perturbation": (adversarial - unit).numpy()},
            metrics={
                "before": [spec.label(int(i)) for i in before],
                "after": [spec.label(int(i)) for i in after],
                "success": success.tolist(),
                "success_rate": round(float(success.float().mean()), 4),
                "linf": [round(v, 6) for v in linf],
                "l2": [round(v, 6) for v in l2],
            },
            caveats=[
                "Budgets are in image space ([0, 1] per value): 8/255 in L-inf is a change no person notices.",
                "A failed attack at one budget proves little: stronger attacks (more steps, restarts) may succeed.",
            ],
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
                    f"adversarial: {spec.label(int(after[index]))}",
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
