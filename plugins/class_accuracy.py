"""Per-class accuracy over a whole labeled set: each class's accuracy with its 95% Wilson interval, the confusion
matrix, and the classes the model gets wrong most often (named only where the intervals separate them)."""

from __future__ import annotations

import numpy as np

from viz_server import hookimpl
from viz_server.evidence import shown, wilson
from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Result, Technique, proportion_headline
from viz_server_plugins.toolkit.set_predictions import set_predictions

WORST_SHOWN = 3


class ClassAccuracy(Technique):
    name = "class_accuracy"
    title = "Per-class accuracy"
    family = "robustness"
    tasks = ("classification",)
    suites = ("dataset",)
    inputs = ("dataset",)
    expected_cost = 0.5
    runs_on = "runtime"  # forward passes on onnxruntime only
    summary = "Accuracy per class with 95% intervals, the confusion matrix and the worst classes, over a whole labeled set."

    def run(self, ctx: Context, params: dict) -> Result:
        found = set_predictions(ctx)
        classes, labels, predicted = found.classes, found.labels, found.predicted
        confusion = np.zeros((len(classes), len(classes)), np.int64)
        np.add.at(confusion, (labels, predicted), 1)
        present = [index for index in range(len(classes)) if confusion[index].sum()]
        per_class = {index: (int(confusion[index, index]), int(confusion[index].sum())) for index in present}
        rows = [["class", "pictures", "right", "accuracy (95% CI)", "most often taken for"]]
        for index in present:
            right, count = per_class[index]
            wrong = confusion[index].copy()
            wrong[index] = 0
            mistaken = f"{classes[int(wrong.argmax())]} ({int(wrong.max())})" if wrong.any() else "—"
            rows.append([classes[index], count, right, shown(right / count, wilson(right, count), None), mistaken])
        worst = min(present, key=lambda index: (per_class[index][0] / per_class[index][1], -per_class[index][1]))  # a tie: the class with more pictures
        sentences = self._worst(classes, per_class, present)
        absent = [classes[index] for index in range(len(classes)) if index not in per_class]
        caveats = (
            [
                f"{len(absent)} of the model's {len(classes)} classes have no picture in the set ({', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}); nothing is said about them."
            ]
            if absent
            else []
        )
        correct = int(found.correct.sum())
        return Result(
            artifacts=[
                Artifact("per_class.csv", "accuracy per class (95% Wilson intervals)", kind="table", rows=rows, group="classes"),
                Artifact(
                    "confusion.png",
                    "confusion matrix: rows are the labels, columns the predictions",
                    kind="plot",
                    data=self._plot(confusion, present, classes),
                    array="confusion",
                    group="classes",
                ),
            ],
            arrays={"confusion": confusion},
            metrics={
                "verdict": sentences,
                "per_class": {classes[index]: {"right": right, "pictures": count} for index, (right, count) in per_class.items()},
                "confusion": confusion.tolist(),
                "headline": {
                    "accuracy": proportion_headline(correct, len(labels), "accuracy on the labeled set"),
                    "per_class_accuracy_min": proportion_headline(
                        per_class[worst][0], per_class[worst][1], "lowest per-class accuracy", note=f"class {classes[worst]}"
                    ),
                },
            },
            caveats=caveats,
        )

    @staticmethod
    def _worst(classes, per_class, present) -> list[str]:
        """The worst classes, named as worst only when their intervals lie below the best class's."""
        order = sorted(present, key=lambda index: per_class[index][0] / per_class[index][1])
        best_low = max(wilson(*per_class[index])[0] for index in present)
        below = [index for index in order if wilson(*per_class[index])[1] < best_low][:WORST_SHOWN]
        figures = "; ".join(
            f"{classes[index]} {shown(per_class[index][0] / per_class[index][1], wilson(*per_class[index]), per_class[index][1])}"
            for index in (below or order[:WORST_SHOWN])
        )
        if below:
            return [f"The classes the model gets wrong most often, each below the best class's interval: {figures}."]
        return [f"No class can be shown to be worse than another on these pictures (every interval overlaps the best class's); lowest: {figures}."]

    @staticmethod
    def _plot(confusion, present, classes) -> bytes:
        pyplot = plotting()
        shown_classes = present[:30]
        matrix = confusion[np.ix_(shown_classes, shown_classes)].astype(np.float64)
        rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        side = 2.5 + 0.3 * len(shown_classes)
        figure, axis = pyplot.subplots(figsize=(side, side), dpi=100)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        names = [classes[index] for index in shown_classes]
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        if len(names) <= 12:
            for row in range(len(names)):
                for column in range(len(names)):
                    axis.text(
                        column, row, int(matrix[row, column]), ha="center", va="center", fontsize=7, color="white" if rates[row, column] > 0.5 else "black"
                    )
        axis.set_xlabel("predicted")
        axis.set_ylabel("label")
        return figure_png(figure)


@hookimpl
def register_techniques():
    return [ClassAccuracy()]
