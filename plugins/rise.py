"""RISE (Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models"): the
target's score on many copies of the image under random smooth masks; each pixel's importance is the mean score
of the copies that kept it, minus the mean score of all (so a constant score gives an empty map). Forward passes
only, on onnxruntime."""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.techniques import Param
from viz_server_plugins.toolkit.perturbation import BASELINE_PARAM, BATCH_PARAM, ForwardAttribution, blend, fill


class Rise(ForwardAttribution):
    name = "rise"
    title = "RISE"
    summary = "Which pixels the copies that keep them score higher with, over many random smooth masks (forward passes only)."
    expected_cost = 6.0
    ranking_params = {"masks": 250}  # the ranking scores every method on every image: a bounded cost there
    ranking_note = "250 masks"
    extra_params = (
        Param("masks", "int", 1000, "Random masks (each costs one forward pass per image).", minimum=50, maximum=8000),
        Param("cells", "int", 8, "Cells per side of each mask's coarse random grid.", minimum=2, maximum=32),
        Param("keep", "float", 0.5, "Share of the grid's cells each mask keeps.", minimum=0.1, maximum=0.9),
        BASELINE_PARAM,
        BATCH_PARAM,
    )

    def perturbation_map(self, model, score, image, params, rng):
        height, width = model.spec.height, model.spec.width
        count, cells, keep = params["masks"], params["cells"], params["keep"]
        cell = (-(-height // cells), -(-width // cells))
        grids = (rng.random((count, cells, cells)) < keep).astype(np.float32)
        shifts = np.stack([rng.integers(0, cell[0], count), rng.integers(0, cell[1], count)], 1)
        covered = fill(image, params["baseline"], model)
        weighted, kept, scores = np.zeros((height, width)), np.zeros((height, width)), []
        for first in range(0, count, params["batch"]):
            masks = smooth_masks(grids[first : first + params["batch"]], shifts[first : first + params["batch"]], cell, height, width)
            values = score(blend(image, covered, masks, model.spec.layout)).astype(np.float64)
            weighted += np.tensordot(values, masks, 1)
            kept += masks.sum(0)
            scores.append(values)
        mean = float(np.concatenate(scores).mean())
        return (weighted - mean * kept) / (count * keep)


def smooth_masks(grids: np.ndarray, shifts: np.ndarray, cell: tuple[int, int], height: int, width: int) -> np.ndarray:
    """K x H x W masks in [0, 1]: each coarse grid upsampled bilinearly to (cells + 1) cells and cropped at its shift."""
    cells = grids.shape[1]
    up = torch.nn.functional.interpolate(
        torch.from_numpy(grids)[:, None], size=((cells + 1) * cell[0], (cells + 1) * cell[1]), mode="bilinear", align_corners=False
    )[:, 0]
    return np.stack([up[k, dy : dy + height, dx : dx + width].numpy() for k, (dy, dx) in enumerate(shifts)])


@hookimpl
def register_techniques():
    return [Rise()]
