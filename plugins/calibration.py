"""Calibration over a whole labeled set (Guo et al. 2017): top-label expected calibration error over 15 equal-width
bins with its reliability diagram, the negative log-likelihood, the Brier score, and the temperature that
minimizes the NLL with the ECE it would give."""

from __future__ import annotations

import numpy as np
from scipy import special

from viz_server import hookimpl
from viz_server.evidence import bootstrap, paired_difference, shown
from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Result, Technique, headline, sample_headline
from viz_server_plugins.toolkit import calibration
from viz_server_plugins.toolkit.set_predictions import set_predictions


class Calibration(Technique):
    name = "calibration"
    title = "Calibration"
    family = "robustness"
    tasks = ("classification",)
    suites = ("dataset",)
    inputs = ("dataset",)
    expected_cost = 0.5
    runs_on = "runtime"  # forward passes on onnxruntime only
    summary = "Is the model's confidence as often right as it says? ECE with a reliability diagram, NLL, Brier score and the best temperature."

    def run(self, ctx: Context, params: dict) -> Result:
        found = set_predictions(ctx)
        probabilities, labels = found.probabilities, found.labels
        count = len(labels)
        ece = calibration.expected_calibration_error(probabilities, labels)
        confidence, correct = probabilities.max(1), found.correct.astype(np.float64)
        # the bootstrap resamples pictures: (confidence, right or wrong) pairs, by index
        ece_interval = bootstrap(
            np.arange(count), lambda drawn: calibration.ece_of(confidence[drawn.astype(np.int64)], correct[drawn.astype(np.int64)]), seed=ctx.seed
        )
        nll, brier = calibration.negative_log_likelihood(probabilities, labels), calibration.brier(probabilities, labels)
        temperature = calibration.best_temperature(found.scores, labels)
        scaled_ece = calibration.expected_calibration_error(special.softmax(found.scores / temperature, axis=1), labels)
        gap = confidence - correct
        _mean, gap_interval, _count = paired_difference(confidence, correct)
        if gap_interval is not None and gap_interval[0] > 0:
            direction = "over-confident: its mean confidence is above its accuracy"
        elif gap_interval is not None and gap_interval[1] < 0:
            direction = "under-confident: its mean confidence is below its accuracy"
        else:
            direction = "neither over- nor under-confident on average, as far as these pictures show"
        sentences = [
            f"Top-label ECE {shown(ece, ece_interval, count)} over {calibration.BINS} equal-width bins (the binned ECE reads high on small sets). "
            f"The model is {direction} (mean confidence {confidence.mean():.3f}, accuracy {correct.mean():.3f}; difference "
            f"{shown(float(gap.mean()), gap_interval, count)})."
        ]
        at_bound = temperature <= calibration.LOWEST * 1.001 or temperature >= calibration.HIGHEST / 1.001
        sentences.append(
            f"Dividing the scores by a temperature of {temperature:.3f} {'(the end of the range searched: a bound, not a minimum) ' if at_bound else ''}"
            f"minimizes the NLL on these pictures and gives an ECE of {scaled_ece:.3f} (fitted and measured on the same pictures: an optimistic "
            "figure until checked on held-out ones)."
        )
        table = calibration.reliability(probabilities, labels)
        rows = [["confidence bin", "pictures", "mean confidence", "accuracy"]] + [
            [
                f"{table.edges[index]:.3f}-{table.edges[index + 1]:.3f}" if index < calibration.BINS else "1.000",
                int(table.counts[index]),
                round(float(table.confidence[index]), 4),
                round(float(table.accuracy[index]), 4),
            ]
            for index in range(len(table.counts))
            if table.counts[index]
        ]
        return Result(
            artifacts=[
                Artifact(
                    "reliability.png",
                    "reliability diagram: accuracy against confidence per bin (the diagonal is perfect calibration)",
                    kind="plot",
                    data=self._plot(table),
                    group="calibration",
                ),
                Artifact("reliability.csv", "pictures, mean confidence and accuracy per confidence bin", kind="table", rows=rows, group="calibration"),
            ],
            metrics={
                "verdict": sentences,
                "ece": ece,
                "nll": float(nll.mean()),
                "brier": float(brier.mean()),
                "temperature": temperature,
                "ece_after_temperature": scaled_ece,
                "headline": {
                    "ece": headline(ece, "top-label expected calibration error (15 bins)", "lower", count=count, interval=ece_interval),
                    "nll": sample_headline(nll, "negative log-likelihood per picture", "lower"),
                    "brier": sample_headline(brier, "Brier score per picture", "lower"),
                },
            },
        )

    @staticmethod
    def _plot(table: calibration.Reliability) -> bytes:
        pyplot = plotting()
        figure, axis = pyplot.subplots(figsize=(4.0, 3.6), dpi=100)
        bins = len(table.edges) - 1
        used = np.flatnonzero(table.counts[:bins])
        centres = (table.edges[:-1] + table.edges[1:]) / 2
        axis.bar(centres[used], table.accuracy[used], width=1 / bins, edgecolor="black", color="#4c78a8", label="accuracy")
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        axis.plot(table.confidence[used], table.accuracy[used], "o", color="#f58518", markersize=3, label="mean confidence")
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.legend(fontsize=7, loc="upper left")
        return figure_png(figure)


@hookimpl
def register_techniques():
    return [Calibration()]
