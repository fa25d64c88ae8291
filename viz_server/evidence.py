"""How sure a figure is: the 95% intervals every headline figure and verdict carries.

- Proportions (accuracy, a sanity check's failure rate, shape decisions): the Wilson score interval (Wilson 1927),
  which stays inside [0, 1] and is honest at 0 or N successes and on a handful of pictures.
- Means over pictures, and paired differences (the lead of one method over another on the same pictures):
  Student's t interval with n - 1 degrees of freedom. The percentile bootstrap is too narrow on few pictures (on
  2 pictures it is just their minimum and maximum; a check with no true difference found a one-sided false lead
  in 22% of runs at 2 pictures and 9.5% at 4, against a nominal 2.5%), so it serves only statistics with no
  closed form: medians, by the percentile bootstrap over pictures (Efron 1979), seeded.
- A claim that one map beats another needs at least ``MIN_PAIRED`` pictures (below 6, not even a sign test can
  reach 5%), and a claim about the best of several is tested at a Bonferroni-corrected level.
- How many pictures would separate two methods whose difference is within the noise: the usual sample size for
  a paired difference at 95% confidence and 80% power, from the differences seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

MIN_PAIRED = 6
"""Fewest pictures on which one map can be shown to beat another (6 of 6 one way: a sign test's p = 0.031)."""
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
    return (0.0 if successes <= 0 else max(0.0, centre - half)), (1.0 if successes >= count else min(1.0, centre + half))


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


def mean_interval(samples: ArrayLike, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student's t interval of the mean of ``samples`` (non-finite values left out); None below two values."""
    values = np.asarray(samples, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return float(values.mean()) - half, float(values.mean()) + half


def paired_difference(first: ArrayLike, second: ArrayLike, confidence: float = 0.95) -> tuple[float, tuple[float, float] | None, int]:
    """(mean of first - second, its t interval at ``confidence``, pictures) over the pictures both measured."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    differences = a[both] - b[both]
    if differences.size == 0:
        return float("nan"), None, 0
    return float(differences.mean()), mean_interval(differences, confidence), int(differences.size)


def shown_by_pairs(first: ArrayLike, second: ArrayLike, comparisons: int = 1) -> bool:
    """Is ``first`` higher than ``second`` on the pictures both measured: at least ``MIN_PAIRED`` of them, and the
    paired t interval at 95% (Bonferroni-corrected for ``comparisons`` claims made at once) lies above zero?"""
    _mean, interval, count = paired_difference(first, second, 1 - 0.05 / max(1, comparisons))
    return count >= MIN_PAIRED and interval is not None and interval[0] > 0


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


def _form(numbers, digits: int) -> str:
    """Fixed ``digits`` places, or scientific notation when a non-zero number would read as zero."""
    return f".{max(1, digits - 1)}e" if any(0 < abs(number) < 10**-digits for number in numbers) else f".{digits}f"


def shown_interval(low: float, high: float, digits: int = 3) -> str:
    """``0.379-0.657``; ``-0.024 to 0.024`` when a bound is negative or printed in scientific notation."""
    form = _form((low, high), digits)
    between = " to " if low < 0 or "e" in form else "-"
    return f"{low:{form}}{between}{high:{form}}"


def shown(value: float | None, interval: tuple[float, float] | None, count: int | None, digits: int = 3) -> str:
    """``0.812 (95% CI 0.740-0.870, n = 40)``, as every summary prints a figure. A figure whose value or bounds are
    too small for ``digits`` places prints all three in scientific notation, so that none of them reads as zero."""
    if value is None:
        return "cannot be claimed"
    form = _form([value, *(interval or ())], digits)
    details = []
    if interval is not None:
        bounds = shown_interval(*interval, digits) if "e" not in form else f"{interval[0]:{form}} to {interval[1]:{form}}"
        details.append(f"95% CI {bounds}")
    if count is not None:
        details.append(f"n = {count}")
    return f"{value:{form}} ({', '.join(details)})" if details else f"{value:{form}}"
