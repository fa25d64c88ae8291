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
from scipy.linalg import LinAlgError, solveh_banded
from scipy.sparse.linalg import splu, spsolve
from threadpoolctl import threadpool_limits

from viz_server_plugins.toolkit.copy_scores import CopyScores

NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
NOISE = 0.01
"""Standard deviation of the noise added to imputed values, as a fraction of the input's value range (Rong et al.)."""


BANDED_UP_TO = 128
"""Shorter sides up to this many pixels are solved as a band (LAPACK's Cholesky: 1.1-2.7x faster than SuperLU on
64 x 64, 96 x 96 and 128 x 128 pictures); longer ones by SuperLU, whose ordering then fills less than the band."""
BAND_AT_LEAST = 65
"""The band is stored at least this wide: LAPACK's blocked band Cholesky, which it takes only for wide bands, was
measured about twice as fast as its unblocked path on the narrow bands of 64-pixel pictures."""


def impute(picture: np.ndarray, removed: np.ndarray, noise: float = NOISE, rng: np.random.Generator | None = None) -> np.ndarray:
    """``picture`` (H x W x C) with the pixels at flat indices ``removed`` replaced by noisy linear imputation."""
    height, width, channels = picture.shape
    removed = np.asarray(removed, dtype=np.int64)
    result = picture.reshape(height * width, channels).astype(np.float64, copy=True)
    if removed.size == 0:
        return result.reshape(picture.shape).astype(picture.dtype)
    # unknowns numbered along the longer side, so that neighbours are at most the shorter side + 1 apart: a band
    rows, cols = np.divmod(removed, width)
    across = width <= height
    along, side = (rows, cols) if across else (cols, rows)
    stride = width if across else height
    numbering = np.argsort(along * stride + side)
    position = removed[numbering]  # flat positions in the picture, in the unknowns' order
    rows, cols = rows[numbering], cols[numbering]
    unknown = np.full(height * width, -1, np.int64)
    unknown[position] = np.arange(removed.size)
    diagonal = np.zeros(removed.size)
    right_side = np.zeros((removed.size, channels))
    couplings = []  # (unknown, later unknown, weight): the upper triangle of the symmetric system
    for dy, dx, weight in NEIGHBOURS:
        y, x = rows + dy, cols + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        diagonal[inside] += weight  # the weights of a pixel's neighbours inside the image sum to its diagonal
        neighbour = np.where(inside, y * width + x, 0)
        other = np.where(inside, unknown[neighbour], -1)
        known = inside & (other < 0)
        right_side[known] += weight * result[neighbour[known]]
        later = other > np.arange(removed.size)
        couplings.append((np.flatnonzero(later), other[later], weight))
    solution = _solve(diagonal, couplings, right_side, min(height, width))
    if noise:
        solution = solution + noise * (rng if rng is not None else np.random.default_rng(0)).standard_normal(solution.shape)[numbering]
    result[position] = solution
    return result.reshape(picture.shape).astype(picture.dtype)


def _solve(diagonal: np.ndarray, couplings, right_side: np.ndarray, shorter_side: int) -> np.ndarray:
    """Solve the symmetric, diagonally dominant (so positive definite) system: as a band by Cholesky when the
    picture's shorter side is short, else by SuperLU's LU without pivoting on a symmetric ordering."""
    size = diagonal.size
    if shorter_side <= BANDED_UP_TO:
        band = max(shorter_side + 1, BAND_AT_LEAST)
        upper = np.zeros((band + 1, size))
        upper[band] = diagonal
        for first, second, weight in couplings:
            upper[band + first - second, second] = -weight
        try:
            return solveh_banded(upper, right_side, check_finite=False)
        except LinAlgError:  # singular: every pixel of a region removed with no known pixel around it
            pass
    first = np.concatenate([np.arange(size), *(pair[0] for pair in couplings), *(pair[1] for pair in couplings)])
    second = np.concatenate([np.arange(size), *(pair[1] for pair in couplings), *(pair[0] for pair in couplings)])
    off_diagonal = [np.full(pair[0].size, -pair[2]) for pair in couplings]
    values = np.concatenate([diagonal, *off_diagonal, *off_diagonal])
    system = sparse.csc_matrix((values, (first, second)), shape=(size, size))
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
    """MoRF and LeRF curves of each image's chosen target (``objective``, already chosen on the clean images).
    Each picture's imputations draw their noise from their own generator (``seed``, the picture's index), so a
    picture's curves do not depend on the other pictures of the run."""
    unit = model.spec.model_to_unit(images.detach().cpu().numpy())  # N x H x W x C in [0, 1]
    fractions = np.asarray(fractions, np.float64)
    scores = CopyScores(model, objective, len(unit), 2 * len(fractions))
    with threadpool_limits(1, user_api="blas"):  # the band solves run fastest on one thread (measured 1.5x)
        for index, picture in enumerate(unit):
            rng = np.random.default_rng([seed, index])
            most, least = removal_orders(maps[index])
            scores.add(np.concatenate([road_images(picture, most, fractions, noise, rng), road_images(picture, least, fractions, noise, rng)]))
    probabilities = scores.result()
    return RoadCurves(fractions, probabilities[:, : len(fractions)], probabilities[:, len(fractions) :])
