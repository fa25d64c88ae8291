"""How sure a figure is: the 95% intervals every headline figure and verdict carries.

- Proportions (accuracy, a sanity check's failure rate, shape decisions): the Wilson score interval (Wilson 1927),
  which stays inside [0, 1] and is honest at 0 or N successes and on a handful of pictures.
- Means, medians and differences over pictures (a mean accuracy over damaged pictures, a ROAD gap, the lead of one
  method over another on the same pictures): the percentile bootstrap over pictures (Efron 1979), seeded, so a
  report is reproducible.
- How many pictures would separate two methods whose difference is within the noise: the usual sample size for
  a paired difference at 95% confidence and 80% power, from the differences seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""
Z80 = 0.8416212335729143
"""The one-sided quantile for 80% power."""
RESAMPLES = 2000


def wilson(successes: int, count: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of ``successes`` out of ``count`` (None when ``count`` is 0)."""
    if count <= 0:
        return None
    share = successes / count
    centre = (share + Z95**2 / (2 * count)) / (1 + Z95**2 / count)
    half = Z95 * math.sqrt(share * (1 - share) / count + Z95**2 / (4 * count**2)) / (1 + Z95**2 / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap(samples: ArrayLike, statistic: Callable[[np.ndarray], float] = np.mean, seed: int = 0) -> tuple[float, float] | None:
    """The 95% percentile-bootstrap interval of ``statistic`` over ``samples`` (one value per picture; non-finite
    values left out). None for fewer than two samples: one picture says nothing about the spread."""
    values = np.asarray([value for value in np.ravel(np.asarray(samples, dtype=object)) if value is not None and np.isfinite(float(value))], np.float64)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    drawn = values[rng.integers(0, values.size, size=(RESAMPLES, values.size))]
    estimates = np.apply_along_axis(statistic, 1, drawn) if statistic is not np.mean else drawn.mean(axis=1)
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(low), float(high)


def paired_difference(first: ArrayLike, second: ArrayLike, seed: int = 0) -> tuple[float, tuple[float, float] | None, int]:
    """(mean of first - second, its 95% bootstrap interval, pictures) over the pictures both measured."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    differences = a[both] - b[both]
    if differences.size == 0:
        return float("nan"), None, 0
    return float(differences.mean()), bootstrap(differences, seed=seed), int(differences.size)


def pictures_to_separate(first: ArrayLike, second: ArrayLike) -> int | None:
    """About how many pictures a paired comparison needs to tell these two apart at 95% confidence with 80% power,
    if their mean difference and its spread stay as seen; None when they do not differ at all here."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    differences = a[both] - b[both]
    if differences.size < 2 or abs(differences.mean()) < 1e-12:
        return None
    spread = differences.std(ddof=1)
    if spread == 0:
        return int(differences.size)
    return max(int(differences.size), math.ceil(((Z95 + Z80) * spread / abs(differences.mean())) ** 2))


def shown(value: float | None, interval: tuple[float, float] | None, count: int | None, digits: int = 3) -> str:
    """``0.812 (95% CI 0.74-0.87, n = 40)``, as every summary prints a figure."""
    if value is None:
        return "cannot be claimed"
    text = f"{value:.{digits}f}"
    details = []
    if interval is not None:
        details.append(f"95% CI {interval[0]:.{digits}f}-{interval[1]:.{digits}f}")
    if count is not None:
        details.append(f"n = {count}")
    return f"{text} ({', '.join(details)})" if details else text
