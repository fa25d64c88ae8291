"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods").

Deletion curves replace pixels with a constant, and the model then reacts to the shape of the hole rather
than to the information removed (the class leaks through the mask's outline; the images leave the data
distribution). ROAD removes pixels by *noisy linear imputation*: every removed pixel becomes the weighted mean
of its eight neighbours (1/6 for the four direct ones, 1/12 for the diagonals), solved as one sparse linear
system so that removed neighbours are imputed together, plus a little Gaussian noise. The target's probability
is followed with the most relevant pixels removed first (MoRF: a faithful map makes it fall, lower is better)
and the least relevant first (LeRF: it should stay, higher is better). ``gap`` = mean(LeRF - MoRF) summarizes
both (a random order scores about 0). Forward-only, batched, on the onnxruntime session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu, spsolve

NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
NOISE = 0.01
"""Standard deviation of the noise added to imputed values, as a fraction of the input's value range (Rong et al.)."""


def impute(picture: np.ndarray, removed: np.ndarray, noise: float = NOISE, rng: np.random.Generator | None = None) -> np.ndarray:
    """``picture`` (H x W x C) with the pixels at flat indices ``removed`` replaced by noisy linear imputation."""
    height, width, channels = picture.shape
    removed = np.asarray(removed, dtype=np.int64)
    result = picture.reshape(height * width, channels).astype(np.float64, copy=True)
    if removed.size == 0:
        return result.reshape(picture.shape).astype(picture.dtype)
    unknown = np.full(height * width, -1, np.int64)
    unknown[removed] = np.arange(removed.size)
    rows, cols = np.divmod(removed, width)
    diagonal = np.zeros(removed.size)
    right_side = np.zeros((removed.size, channels))
    entries_row, entries_col, entries_value = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        y, x = rows + dy, cols + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        diagonal[inside] += weight  # the weights of a pixel's neighbours inside the image sum to its diagonal
        neighbour = np.where(inside, y * width + x, 0)
        also_removed = inside & (unknown[neighbour] >= 0)
        known = inside & ~also_removed
        right_side[known] += weight * result[neighbour[known]]
        entries_row.append(np.nonzero(also_removed)[0])
        entries_col.append(unknown[neighbour[also_removed]])
        entries_value.append(np.full(int(also_removed.sum()), -weight))
    index = np.arange(removed.size)
    system = sparse.csc_matrix(
        (np.concatenate([diagonal, *entries_value]), (np.concatenate([index, *entries_row]), np.concatenate([index, *entries_col]))),
        shape=(removed.size, removed.size),
    )
    solution = _solve(system, right_side).reshape(removed.size, channels)
    if noise:
        solution = solution + noise * (rng if rng is not None else np.random.default_rng(0)).standard_normal(solution.shape)
    result[removed] = solution
    return result.reshape(picture.shape).astype(picture.dtype)


def _solve(system: sparse.csc_matrix, right_side: np.ndarray) -> np.ndarray:
    """The system is symmetric and diagonally dominant: LU without pivoting on a symmetric ordering is exact
    and about a quarter faster than ``spsolve``'s general one (which stays the fallback for a singular system)."""
    try:
        return splu(system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}).solve(right_side)
    except RuntimeError:
        return spsolve(system, right_side)


@dataclass
class RoadCurves:
    fractions: np.ndarray  # S fractions of pixels removed
    morf: np.ndarray  # N x S target probabilities, most relevant removed first (lower is better)
    lerf: np.ndarray  # N x S, least relevant removed first (higher is better)

    @property
    def gap(self) -> np.ndarray:
        """Per image: mean over the fractions of LeRF - MoRF (higher is better; a random order scores about 0)."""
        return (self.lerf - self.morf).mean(axis=1)


def removal_orders(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(most relevant first, least relevant first) flat pixel orders of one map; ties broken by position."""
    flat = np.asarray(values, np.float64).ravel()
    return np.argsort(-flat, kind="stable"), np.argsort(flat, kind="stable")


def road_images(picture: np.ndarray, order: np.ndarray, fractions, noise: float, rng: np.random.Generator) -> np.ndarray:
    """S x H x W x C: ``picture`` (in [0, 1]) with the first ``fraction`` of ``order`` imputed, per fraction."""
    pixels = picture.shape[0] * picture.shape[1]
    return np.stack([impute(picture, order[: int(round(fraction * pixels))], noise, rng) for fraction in fractions])


def road(model, images, objective, maps: np.ndarray, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), noise: float = NOISE, seed: int = 0) -> RoadCurves:
    """MoRF and LeRF curves of each image's chosen target (``objective``, already chosen on the clean images)."""
    spec = model.spec
    unit = spec.model_to_unit(images.detach().cpu().numpy())  # N x H x W x C in [0, 1]
    fractions = np.asarray(fractions, np.float64)
    rng = np.random.default_rng(seed)
    morf = np.zeros((len(unit), len(fractions)))
    lerf = np.zeros((len(unit), len(fractions)))
    for index, picture in enumerate(unit):
        most, least = removal_orders(maps[index])
        batch = np.concatenate([road_images(picture, most, fractions, noise, rng), road_images(picture, least, fractions, noise, rng)])
        probabilities = objective.probability(model.predict(spec.unit_to_model(batch.astype(np.float32))), [objective.choices[index]] * len(batch))
        morf[index], lerf[index] = probabilities[: len(fractions)], probabilities[len(fractions) :]
    return RoadCurves(fractions, morf, lerf)
