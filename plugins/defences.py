"""Input-transformation defences as probes (Guo et al. 2018, "Countering Adversarial Images using Input
Transformations"; Xu et al. 2018, "Feature Squeezing"): Gaussian noise, JPEG re-encoding and median smoothing
applied before the model. For each, how much accuracy on PGD examples it recovers and how much clean accuracy
it costs. The examples are made against the undefended model - the caveat says why that flatters defences."""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import attacks
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
    summary = "Noise, JPEG and median smoothing before the model: adversarial accuracy recovered vs clean accuracy lost."
    params = (
        Param("epsilon", "float", 8 / 255, "PGD L-inf budget of the attack (image space).", minimum=0.0, maximum=1.0),
        Param("steps", "int", 10, "PGD steps.", minimum=1, maximum=200),
        Param("noise", "str", "0.03,0.06", "Gaussian noise standard deviations to try."),
        Param("jpeg_qualities", "str", "75,50,25", "JPEG qualities to try."),
        Param("median_sizes", "str", "3", "Median filter sizes (pixels) to try."),
    )
    inputs = ("image_set",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        forward = attacks.unit_forward(ctx.model)
        clean_predictions = attacks.predicted_classes(ctx.model, unit)
        labels, source = reference_labels(ctx, clean_predictions)
        adversarial = attacks.pgd(forward, unit, labels, params["epsilon"], 2.5 * params["epsilon"] / params["steps"], params["steps"])
        rng = ctx.rng
        defences = [("none", lambda x: x)]
        defences += [(f"gaussian noise {s:g}", lambda x, s=s: gaussian_noise(x, s, rng)) for s in _numbers(params["noise"], "noise")]
        defences += [(f"JPEG quality {int(q)}", lambda x, q=q: jpeg(x, int(q))) for q in _numbers(params["jpeg_qualities"], "jpeg_qualities")]
        defences += [(f"median {int(k)}x{int(k)}", lambda x, k=k: median_smoothing(x, int(k))) for k in _numbers(params["median_sizes"], "median_sizes")]

        def accuracy(images: np.ndarray) -> float:
            return float((ctx.model.predict(spec.unit_to_model(images)).argmax(1) == labels.numpy()).mean())

        rows = [["defence", "clean accuracy", "adversarial accuracy", "clean cost", "adversarial recovered"]]
        results = {}
        for index, (name, transform) in enumerate(defences):
            clean_accuracy = accuracy(transform(unit.numpy()))
            adversarial_accuracy = accuracy(transform(adversarial.numpy()))
            results[name] = (clean_accuracy, adversarial_accuracy)
            base_clean, base_adversarial = results["none"]
            rows.append(
                [
                    name,
                    round(clean_accuracy, 4),
                    round(adversarial_accuracy, 4),
                    round(base_clean - clean_accuracy, 4),
                    round(adversarial_accuracy - base_adversarial, 4),
                ]
            )
            ctx.progress(index + 1, len(defences), name)
        return Result(
            artifacts=[
                Artifact(
                    "defences.csv",
                    f"PGD L-inf {params['epsilon']:.4f} against the undefended model; labels: {source}",
                    kind="table",
                    rows=rows,
                    group="defences",
                )
            ],
            arrays={"accuracy": np.asarray([results[name] for name, _ in defences], np.float32)},
            metrics={"labels": source, "defences": {name: {"clean": round(c, 4), "adversarial": round(a, 4)} for name, (c, a) in results.items()}},
            caveats=[
                "These defences are measured against an attack that does not know them; attacks that adapt to a defence "
                "(e.g. BPDA, Athalye et al. 2018) usually defeat it. Treat recovered accuracy as an upper bound."
            ],
        )


@hookimpl
def register_techniques():
    return [Defences()]
