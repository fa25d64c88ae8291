"""Whether a map can support any conclusion at all.

A map that is all zero, constant or not finite says nothing about the image: no gradient reached the input
from the target (a saturated or disconnected output, a dead layer), or the arithmetic broke. Such a map must
be named as such, and every check computed on it (the sanity check, deletion/insertion curves, localization)
answers "cannot judge" instead of a verdict.
"""

from __future__ import annotations

import numpy as np

RELATIVE_SPREAD = 1e-7
"""A map whose values spread less than this fraction of their largest magnitude is called constant."""
FLAT_CURVE = 1e-6
"""A curve of target probabilities (deletion, insertion, ROAD) that moves less than this over all its steps is
flat: removing pixels does not change the target (a saturated objective), so it cannot rank a map."""


def why_degenerate(values: np.ndarray) -> str | None:
    """None for a usable map; otherwise a short phrase saying what is wrong with it."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "empty"
    if not np.isfinite(values).all():
        return "not finite (NaN or infinite values)"
    largest = float(np.abs(values).max())
    if largest == 0.0:
        return "all zero"
    if float(values.max() - values.min()) <= RELATIVE_SPREAD * largest:
        return "constant"
    return None


def degenerate_caveat(what: str, index: int, name: str, reason: str) -> str:
    return (
        f"The {what} for image {index} ({name}) is {reason}: no usable signal reached the input from this target "
        "(a saturated or disconnected output, or a layer with no gradient), so this map cannot support any conclusion."
    )


def flat_curves(curves: np.ndarray) -> np.ndarray:
    """Per row (image) of N x S probabilities: True where the curve never moves by ``FLAT_CURVE``."""
    curves = np.asarray(curves, np.float64)
    return ~np.isfinite(curves).all(axis=1) | (np.ptp(curves, axis=1) < FLAT_CURVE)
