"""Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks", section 4.2): a patch
of baseline slides over the image, and each pixel gets the mean drop of the target's score over the patches that
cover it, as Captum's ``Occlusion`` computes it. Forward passes only, on onnxruntime."""

from __future__ import annotations

import numpy as np

from viz_server import hookimpl
from viz_server.techniques import Param
from viz_server_plugins.toolkit.perturbation import BASELINE_PARAM, BATCH_PARAM, ForwardAttribution, blend, fill, in_batches


class Occlusion(ForwardAttribution):
    name = "occlusion"
    title = "Occlusion"
    summary = "How much the target's score drops when a patch of the image is covered, patch by patch (forward passes only)."
    expected_cost = 3.0
    ranking_params = {"window": 0.25, "stride": 0.5}  # the ranking scores every method on every image: a bounded cost there
    ranking_note = "a patch of a quarter of the side"
    extra_params = (
        Param("window", "float", 0.125, "Side of the covering patch, as a share of the image's side.", minimum=0.02, maximum=0.5),
        Param("stride", "float", 0.5, "Step between patches, as a share of the patch's side.", minimum=0.1, maximum=1.0),
        BASELINE_PARAM,
        BATCH_PARAM,
    )

    def perturbation_map(self, model, score, image, params, rng):
        height, width = model.spec.height, model.spec.width
        side = (max(1, round(params["window"] * height)), max(1, round(params["window"] * width)))
        step = (max(1, round(side[0] * params["stride"])), max(1, round(side[1] * params["stride"])))
        windows = [(top, left) for top in starts(height, side[0], step[0]) for left in starts(width, side[1], step[1])]
        covered = fill(image, params["baseline"], model)
        clean = float(score(image[None])[0])

        def altered(first: int, last: int) -> np.ndarray:
            keep = np.ones((last - first, height, width), np.float32)
            for row, (top, left) in enumerate(windows[first:last]):
                keep[row, top : top + side[0], left : left + side[1]] = 0
            return blend(image, covered, keep, model.spec.layout)

        scores = in_batches(score, altered, len(windows), params["batch"])
        drops, counts = np.zeros((height, width)), np.zeros((height, width))
        for (top, left), value in zip(windows, scores):
            drops[top : top + side[0], left : left + side[1]] += clean - float(value)
            counts[top : top + side[0], left : left + side[1]] += 1
        return drops / np.maximum(counts, 1)


def starts(size: int, side: int, step: int) -> list[int]:
    """Where patches of ``side`` start along an axis of ``size``, every ``step``, the last flush with the end so
    that every pixel is covered (where the steps fit exactly, the positions Captum uses)."""
    found = list(range(0, max(size - side, 0) + 1, step))
    if found[-1] != max(size - side, 0):
        found.append(max(size - side, 0))
    return found


@hookimpl
def register_techniques():
    return [Occlusion()]
