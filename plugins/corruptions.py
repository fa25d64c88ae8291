"""Corruption robustness: accuracy under noise, blur, contrast, brightness and JPEG at five severities each
(after ImageNet-C, Hendrycks & Dietterich 2019). Forward-only, batched, on the onnxruntime session."""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Param, Result, Technique, sample_headline
from viz_server_plugins.toolkit.image_transforms import SEVERITIES, corrupt
from viz_server_plugins.toolkit.objectives import reference_labels


class Corruptions(Technique):
    name = "corruptions"
    title = "Corruption robustness"
    family = "robustness"
    tasks = ("classification",)
    suites = ("robustness",)
    summary = "Accuracy under noise, blur, contrast, brightness and JPEG at five severities each (after ImageNet-C)."
    params = (Param("corruptions", "str", ",".join(SEVERITIES), "Comma-separated subset of: " + ", ".join(SEVERITIES) + "."),)
    inputs = ("image_set",)
    runs_on = "runtime"  # forward passes on onnxruntime only

    def run(self, ctx: Context, params: dict) -> Result:
        from viz_server.errors import UserError

        spec = ctx.model.spec
        kinds = [k.strip() for k in params["corruptions"].split(",") if k.strip()]
        if not kinds or any(k not in SEVERITIES for k in kinds):
            raise UserError(f"corruptions must be a comma-separated subset of {', '.join(SEVERITIES)}.")
        unit = np.clip(spec.model_to_unit(ctx.images.numpy()), 0, 1).astype(np.float32)
        clean = ctx.model.predict(spec.unit_to_model(unit)).argmax(1)
        labels, source = reference_labels(ctx, torch.from_numpy(clean))
        labels = labels.numpy()
        rng = ctx.rng
        table = np.zeros((len(kinds), 5))
        hits = np.zeros(len(unit))  # per picture: how many corrupted versions it was classified right in
        for row, kind in enumerate(kinds):
            for severity in range(1, 6):
                predictions = ctx.model.predict(spec.unit_to_model(corrupt(unit, kind, severity, rng))).argmax(1)
                table[row, severity - 1] = float((predictions == labels).mean())
                hits += predictions == labels
                ctx.progress(row * 5 + severity, len(kinds) * 5, f"{kind} severity {severity}: {table[row, severity - 1]:.3f}")
        clean_accuracy = float((clean == labels).mean())
        rows = [["corruption", "1", "2", "3", "4", "5", "mean"]] + [
            [k] + [round(float(v), 4) for v in table[i]] + [round(float(table[i].mean()), 4)] for i, k in enumerate(kinds)
        ]
        return Result(
            artifacts=[
                Artifact(
                    "corruptions.csv",
                    f"accuracy per corruption and severity (clean {clean_accuracy:.3f}; labels: {source})",
                    kind="table",
                    rows=rows,
                    group="corruptions",
                ),
                Artifact(
                    "corruptions.png",
                    "accuracy against severity",
                    kind="plot",
                    data=self._plot(kinds, table, clean_accuracy),
                    array="accuracy",
                    group="corruptions",
                ),
            ],
            arrays={"accuracy": table.astype(np.float32)},
            metrics={
                "labels": source,
                "clean_accuracy": round(clean_accuracy, 4),
                "mean_corruption_accuracy": round(float(table.mean()), 4),
                "headline": {
                    "corruption_accuracy": sample_headline(hits / table.size, "mean accuracy over corruptions and severities (per picture)", "higher")
                },
                "accuracy": {k: [round(float(v), 4) for v in table[i]] for i, k in enumerate(kinds)},
            },
            caveats=["Severities follow ImageNet-C; on small images blur is scaled to the image size, the others are not."],
        )

    @staticmethod
    def _plot(kinds, table, clean_accuracy) -> bytes:
        pyplot = plotting()

        figure, axis = pyplot.subplots(figsize=(4.4, 3.0), dpi=100)
        for kind, values in zip(kinds, table):
            axis.plot(range(0, 6), [clean_accuracy, *values], marker="o", label=kind)
        axis.set_xlabel("severity (0 = clean)")
        axis.set_ylabel("accuracy")
        axis.set_ylim(0, 1.02)
        axis.legend(fontsize=7)
        return figure_png(figure)


@hookimpl
def register_techniques():
    return [Corruptions()]
