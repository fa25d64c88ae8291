"""Input-transformation defences as probes (Guo et al. 2018, "Countering Adversarial Images using Input
Transformations"; Xu et al. 2018, "Feature Squeezing"): Gaussian noise, JPEG re-encoding and median smoothing
applied before the model. For each: the clean accuracy it costs, and the accuracy it leaves under attack twice,
against an attack that does not know the defence (the AutoAttack-style ensemble on the bare model) and against
an adaptive one (APGD through the defence with BPDA for JPEG and median filtering, EOT for the noise; Athalye,
Carlini & Wagner 2018). Only the adaptive figure says what the defence is worth."""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import attacks, robust_evaluation
from viz_server_plugins.toolkit.adaptive import defended_forward
from viz_server_plugins.toolkit.apgd import apgd
from viz_server_plugins.toolkit.image_transforms import gaussian_noise, jpeg, median_smoothing
from viz_server_plugins.toolkit.objectives import reference_labels


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers.") from None


class Defences(Technique):
    name = "defences"
    title = "Defences as probes"
    family = "robustness"
    tasks = ("classification",)
    version = "2"
    summary = "Noise, JPEG and median smoothing before the model: accuracy left under a non-adaptive and an adaptive (BPDA/EOT) attack."
    params = robust_evaluation.ATTACK_PARAMS + (
        Param("eot_samples", "int", 8, "Noise draws the adaptive attack averages over (EOT).", minimum=1, maximum=64),
        Param("noise", "str", "0.03,0.06", "Gaussian noise standard deviations to try."),
        Param("jpeg_qualities", "str", "75,50,25", "JPEG qualities to try."),
        Param("median_sizes", "str", "3", "Median filter sizes (pixels) to try."),
    )
    inputs = ("image_set",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        labels, source = reference_labels(ctx, attacks.predicted_classes(ctx.model, unit))
        outcome = robust_evaluation.run_attack(ctx, unit, labels, params)
        adversarial = outcome.adversarial
        defences: list[tuple[str, object, bool]] = [("none", lambda x: x, False)]
        noise_draws = np.random.default_rng(ctx.seed)  # one stream: every call (and every EOT sample) draws afresh
        defences += [(f"gaussian noise {s:g}", lambda x, s=s: gaussian_noise(x, s, noise_draws), True) for s in _numbers(params["noise"], "noise")]
        defences += [(f"JPEG quality {int(q)}", lambda x, q=q: jpeg(x, int(q)), False) for q in _numbers(params["jpeg_qualities"], "jpeg_qualities")]
        defences += [(f"median {int(k)}x{int(k)}", lambda x, k=k: median_smoothing(x, int(k)), False) for k in _numbers(params["median_sizes"], "median_sizes")]

        def correct(images: np.ndarray) -> np.ndarray:
            return ctx.model.predict(spec.unit_to_model(images)).argmax(1) == labels.numpy()

        rows = [
            [
                "defence",
                "clean accuracy",
                "accuracy, non-adaptive attack",
                "accuracy, adaptive attack",
                "clean cost",
                "recovered, non-adaptive",
                "recovered, adaptive",
            ]
        ]
        results = {}
        generator = ctx.torch_generator()
        for index, (name, transform, random) in enumerate(defences):
            clean_ok = correct(transform(unit.numpy()))
            non_adaptive_ok = correct(transform(adversarial.numpy()))
            if name == "none":
                adaptive_ok = non_adaptive_ok
            else:  # the worst of both attacks: an image survives only if neither breaks it
                ctx.progress(index, len(defences), f"adaptive attack on {name}")
                run = apgd(
                    defended_forward(ctx.model, transform, random, params["eot_samples"]),
                    unit,
                    labels,
                    params["epsilon"],
                    params["norm"],
                    "margin",
                    steps=params["steps"],
                    generator=generator,
                )
                adaptive_ok = non_adaptive_ok & correct(transform(run.adversarial.numpy()))
            results[name] = (float(clean_ok.mean()), float(non_adaptive_ok.mean()), float(adaptive_ok.mean()))
            base = results["none"]
            clean_accuracy, non_adaptive, adaptive = results[name]
            rows.append(
                [
                    name,
                    round(clean_accuracy, 4),
                    round(non_adaptive, 4),
                    round(adaptive, 4),
                    round(base[0] - clean_accuracy, 4),
                    round(non_adaptive - base[1], 4),
                    round(adaptive - base[2], 4),
                ]
            )
            ctx.progress(index + 1, len(defences), name)
        findings = robust_evaluation.masking_findings(zero_gradient_share=outcome.zero_gradient_share, gradient_free_only=outcome.gradient_free_only)
        return Result(
            artifacts=[
                Artifact(
                    "defences.csv",
                    f"{params['attack']} {params['norm']} epsilon {params['epsilon']:.4f}; adaptive: APGD through the defence (BPDA/EOT); labels: {source}",
                    kind="table",
                    rows=rows,
                    group="defences",
                )
            ],
            arrays={"accuracy": np.asarray([results[name] for name, _, _ in defences], np.float32)},
            metrics={
                "labels": source,
                "defences": {name: {"clean": round(c, 4), "non_adaptive": round(n, 4), "adaptive": round(a, 4)} for name, (c, n, a) in results.items()},
                "masking_findings": findings,
            },
            caveats=[
                robust_evaluation.verdict(findings),
                "A defence's worth is its adaptive figure: the non-adaptive one is measured against an attack that does not know the "
                "defence and usually flatters it (Athalye et al. 2018). Even the adaptive figure is an upper bound.",
            ],
        )


@hookimpl
def register_techniques():
    return [Defences()]
