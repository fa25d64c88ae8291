"""Finding the cue a class is decided by when it is not the object (a "Clever Hans" predictor; Lapuschkin et al.
2019, "Unmasking Clever Hans predictors and assessing what machines really learn").

1. Candidate regions from attribution maps pooled to a ``GRID`` x ``GRID`` grid: with object masks, the window
   holding the most of a class's mean attribution *outside* the object; without, spectral relevance analysis
   (SpRAy): the class's maps are clustered (spectral clustering, the number of clusters by the eigengap) and a
   cluster whose members put their mass in one window is a candidate.
2. Every candidate is tested counterfactually on pictures the candidate was not found on: removing the window
   (blur, and noisy linear imputation as in ROAD; Rong et al. 2022) should flip the class's correct predictions,
   and pasting the window's content into other classes' pictures should turn them into the class. Each effect is
   compared with the same operation on control windows of the same size placed uniformly at random where they
   do not overlap it (with masks, every window only on pictures whose object it stays off): a
   Monte-Carlo permutation p-value, (1 + controls at least as strong) / (1 + controls), stopped early once the
   p-value cannot fall below the level (Besag & Clifford 1991).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from viz_server_plugins.toolkit.road import impute

GRID = 16


@dataclass(frozen=True)
class Box:
    """A window in pixels of the model's input: rows top..top+height, columns left..left+width."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def overlap(self, other: Box) -> float:
        """Intersection over union."""
        rows = max(0, min(self.top + self.height, other.top + other.height) - max(self.top, other.top))
        columns = max(0, min(self.left + self.width, other.left + other.width) - max(self.left, other.left))
        inter = rows * columns
        return inter / (self.height * self.width + other.height * other.width - inter)


def pooled(maps: np.ndarray, grid: int = GRID, normalize: bool = True) -> np.ndarray:
    """N x H x W non-negative maps -> N x grid x grid cell means; with ``normalize`` each map sums to 1 (a map with
    no mass stays zero), else the cells keep their mean (a mask's share of each cell on the object)."""
    tensor = torch.from_numpy(np.abs(np.asarray(maps, np.float32)))[:, None]
    cells = torch.nn.functional.adaptive_avg_pool2d(tensor, grid)[:, 0].double().numpy()
    if not normalize:
        return cells
    totals = cells.reshape(len(cells), -1).sum(1)
    return np.where(totals[:, None, None] > 0, cells / np.maximum(totals, 1e-300)[:, None, None], 0.0)


def window_sums(grid_maps: np.ndarray, side: int) -> np.ndarray:
    """... x (G - side + 1) x (G - side + 1): the mass inside every side x side window."""
    padded = np.pad(np.cumsum(np.cumsum(grid_maps, -1), -2), [(0, 0)] * (grid_maps.ndim - 2) + [(1, 0), (1, 0)])
    return padded[..., side:, side:] - padded[..., :-side, side:] - padded[..., side:, :-side] + padded[..., :-side, :-side]


def best_window(grid_map: np.ndarray, side: int) -> tuple[int, int, float]:
    """(row, column, mass) of the side x side window holding the most of ``grid_map``."""
    sums = window_sums(grid_map, side)
    row, column = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(row), int(column), float(sums[row, column])


def to_box(row: int, column: int, side: int, height: int, width: int, grid: int = GRID) -> Box:
    """A window of grid cells -> the same window in pixels (at least one pixel each way)."""
    top, bottom = round(row * height / grid), round((row + side) * height / grid)
    left, right = round(column * width / grid), round((column + side) * width / grid)
    top, left = min(top, height - 1), min(left, width - 1)
    return Box(top, left, max(1, bottom - top), max(1, right - left))


def spectral_clusters(vectors: np.ndarray, most: int = 4, neighbours: int = 8, seed: int = 0) -> np.ndarray:
    """Spectral clustering (Ng, Jordan & Weiss 2001) of ``vectors`` (one row per map), as SpRAy clusters maps: a
    symmetric k-nearest-neighbour graph with Gaussian weights, the normalized Laplacian's first eigenvectors, the
    number of clusters where the eigengap is largest (at most ``most``), k-means on the normalized embedding."""
    count = len(vectors)
    if count < 2 * neighbours:
        return np.zeros(count, np.int64)
    squares = (vectors**2).sum(1)
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * vectors @ vectors.T, 0))  # no N x N x D array
    nearest = np.argsort(distances, 1)[:, 1 : neighbours + 1]
    scale = np.median(distances[np.arange(count)[:, None], nearest]) or 1.0
    affinity = np.zeros((count, count))
    rows = np.repeat(np.arange(count), neighbours)
    affinity[rows, nearest.ravel()] = np.exp(-((distances[rows, nearest.ravel()] / scale) ** 2))
    affinity = np.maximum(affinity, affinity.T)
    degree = affinity.sum(1)
    inverse_root = 1 / np.sqrt(np.maximum(degree, 1e-12))
    laplacian = np.eye(count) - inverse_root[:, None] * affinity * inverse_root[None, :]
    values, vectors_ = np.linalg.eigh(laplacian)
    gaps = np.diff(values[: most + 1])
    clusters = int(np.argmax(gaps)) + 1
    if clusters == 1:
        return np.zeros(count, np.int64)
    embedding = vectors_[:, :clusters]
    embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return kmeans(embedding, clusters, seed)


def kmeans(points: np.ndarray, clusters: int, seed: int = 0, restarts: int = 8, steps: int = 50) -> np.ndarray:
    """Lloyd's k-means, the best of ``restarts`` seeded k-means++ starts."""
    rng = np.random.default_rng(seed)
    best, best_cost = np.zeros(len(points), np.int64), np.inf
    for _ in range(restarts):
        centres = [points[rng.integers(len(points))]]
        for _ in range(clusters - 1):
            nearest = np.min([((points - centre) ** 2).sum(1) for centre in centres], 0)
            centres.append(points[rng.choice(len(points), p=nearest / nearest.sum()) if nearest.sum() > 0 else rng.integers(len(points))])
        centre_array = np.array(centres)
        for _ in range(steps):
            labels = ((points[:, None, :] - centre_array[None]) ** 2).sum(-1).argmin(1)
            moved = np.array([points[labels == k].mean(0) if (labels == k).any() else centre_array[k] for k in range(clusters)])
            if np.allclose(moved, centre_array):
                break
            centre_array = moved
        cost = float(((points - centre_array[labels]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


# ---- the counterfactual test ---------------------------------------------------------------------------------


def blurred(unit: np.ndarray, box: Box) -> np.ndarray:
    """N x H x W x C pictures with ``box`` replaced by a strong Gaussian blur of the picture (sigma: half the box)."""
    sigma = max(box.height, box.width) / 2
    out = unit.copy()
    rows, columns = box.slices()
    out[:, rows, columns] = ndimage.gaussian_filter(unit, sigma=(0, sigma, sigma, 0), mode="nearest")[:, rows, columns]
    return out


def imputed(unit: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray:
    """N x H x W x C pictures with ``box`` filled by noisy linear imputation from its surroundings (ROAD)."""
    height, width = unit.shape[1:3]
    grid = np.zeros((height, width), bool)
    grid[box.slices()] = True
    removed = np.flatnonzero(grid)
    return np.stack([impute(picture, removed, rng=rng) for picture in unit])


def pasted(targets: np.ndarray, sources: np.ndarray, box: Box) -> np.ndarray:
    """``targets`` with the content of ``box`` copied from ``sources`` (cycled) at the same place."""
    out = targets.copy()
    rows, columns = box.slices()
    out[:, rows, columns] = sources[np.arange(len(targets)) % len(sources)][:, rows, columns]
    return out


@dataclass
class Effects:
    """What happens to the class's decisions when a window is removed or pasted."""

    flipped: int  # of the class's correct pictures, how many leave the class once the window is removed (the worse of blur and imputation)
    removal_pictures: int
    converted: int  # of other classes' correctly predicted pictures, how many become the class once the window is pasted in
    paste_pictures: int

    @property
    def removal(self) -> float:
        return self.flipped / max(self.removal_pictures, 1)

    @property
    def paste(self) -> float:
        return self.converted / max(self.paste_pictures, 1)


MIN_ELIGIBLE = 8
"""Fewest pictures a window's removal is measured on (with masks: pictures whose object it stays off); a control
window with fewer is drawn again, a candidate with fewer cannot be judged."""


def off_object(masks: np.ndarray | None, box: Box, count: int) -> np.ndarray:
    """Which pictures' objects ``box`` stays off entirely (all of them without masks)."""
    if masks is None:
        return np.ones(count, bool)
    rows, columns = box.slices()
    return np.asarray(~masks[:, rows, columns].any(axis=(1, 2)), bool)


def effects(
    predict: Callable[[np.ndarray], np.ndarray],
    class_index: int,
    own: np.ndarray,
    others: np.ndarray,
    box: Box,
    seed: int,
    own_masks: np.ndarray | None = None,
    other_masks: np.ndarray | None = None,
) -> Effects:
    """``predict``: N x H x W x C unit pictures -> predicted class indices. ``own``: the class's correctly predicted
    pictures; ``others``: other classes' correctly predicted pictures. With their object masks, only pictures whose
    object the window stays off take part (the window's content is then never the object, neither removed nor
    pasted), for the candidate and its controls alike."""
    rng = np.random.default_rng(seed)
    own = own[off_object(own_masks, box, len(own))]
    others = others[off_object(other_masks, box, len(others))]
    if len(own) < MIN_ELIGIBLE:
        return Effects(0, len(own), 0, len(others))
    flipped = max(int((predict(blurred(own, box)) != class_index).sum()), int((predict(imputed(own, box, rng)) != class_index).sum()))
    converted = int((predict(pasted(others, own, box)) == class_index).sum()) if len(others) else 0
    return Effects(flipped, len(own), converted, len(others))


@dataclass
class Test:
    """A candidate window's effects against those of random control windows of its size."""

    box: Box
    effects: Effects
    controls: list[Effects] = field(default_factory=list)
    p_removal: float = 1.0
    p_paste: float = 1.0

    @property
    def p_value(self) -> float:
        """A finding needs both effects: the larger of the two p-values."""
        return max(self.p_removal, self.p_paste)

    def detectable(self, level: float) -> tuple[float, float] | None:
        """Estimated from the controls drawn: the removal and paste effects a candidate would have had to exceed to
        pass at ``level`` (the controls' upper quantile; with few controls, their maximum, a lower bound). None when
        the controls already reach every picture: no effect here could have passed."""
        if not self.controls:
            return None
        removal = np.sort([control.removal for control in self.controls])
        paste = np.sort([control.paste for control in self.controls])
        rank = min(len(removal) - 1, max(0, math.ceil((1 - level) * (len(removal) + 1)) - 1))
        if removal[rank] >= 1.0 or paste[rank] >= 1.0:
            return None
        return float(removal[rank]), float(paste[rank])


def controls_needed(level: float) -> int:
    """Control windows for a permutation p-value that can fall below ``level``: (1 + 0) / (1 + K) < level."""
    return math.ceil(1 / level)


def control_starts(height: int, width: int, box: Box) -> np.ndarray:
    """Flat indices (row * columns + column) of every top-left corner where a window of ``box``'s size fits and
    does not overlap ``box``; every corner where it fits when none avoids it."""
    rows = np.arange(height - box.height + 1)
    columns = np.arange(width - box.width + 1)
    rows_apart = (rows + box.height <= box.top) | (rows >= box.top + box.height)
    columns_apart = (columns + box.width <= box.left) | (columns >= box.left + box.width)
    apart = rows_apart[:, None] | columns_apart[None, :]
    return np.flatnonzero(apart) if apart.any() else np.arange(apart.size)


def permutation_test(measure: Callable[[Box, int], Effects], box: Box, height: int, width: int, level: float, seed: int, batch: int = 25) -> Test:
    """Test ``box`` against control windows of its size placed uniformly where they do not overlap it, in batches,
    stopping once either p-value can no longer fall below ``level`` (so a clean class costs a few dozen controls,
    a finding the full count). A control measured on fewer than ``MIN_ELIGIBLE`` pictures (its window lies on the
    objects) is drawn again, up to a bound; p-values count only the controls measured."""
    rng = np.random.default_rng(seed)
    test = Test(box, measure(box, seed))
    if test.effects.removal_pictures < MIN_ELIGIBLE:
        return test  # cannot be judged: p stays 1
    starts = control_starts(height, width, box)
    columns = width - box.width + 1
    total = controls_needed(level)
    allowed = math.ceil(level * (total + 1) - 1) - 1  # the most controls at least as strong that still leave p < level
    stronger_removal = stronger_paste = draws = 0
    while len(test.controls) < total and draws < 4 * total:
        for _ in range(min(batch, total - len(test.controls))):
            draws += 1
            row, column = divmod(int(starts[rng.integers(len(starts))]), columns)
            found = measure(Box(row, column, box.height, box.width), int(rng.integers(2**31)))
            if found.removal_pictures < MIN_ELIGIBLE:
                continue
            test.controls.append(found)
            stronger_removal += found.removal >= test.effects.removal
            stronger_paste += found.paste >= test.effects.paste
        if stronger_removal > allowed or stronger_paste > allowed:
            break
    count = len(test.controls)
    test.p_removal, test.p_paste = (1 + stronger_removal) / (1 + count), (1 + stronger_paste) / (1 + count)
    return test
