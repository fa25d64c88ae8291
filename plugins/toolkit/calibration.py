"""How well a classifier's confidence matches how often it is right (Guo et al. 2017, "On Calibration of Modern
Neural Networks"): the top-label expected calibration error over equal-width bins (Naeini et al. 2015), the
negative log-likelihood, the Brier score (Brier 1950), and the single temperature that minimizes the NLL
(temperature scaling). Probabilities in, numbers out: no model here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

BINS = 15
TINY = 1e-12
LOWEST, HIGHEST = 0.01, 100.0
"""The temperatures searched; a best temperature at either end is a bound, not a minimum."""


@dataclass
class Reliability:
    """The reliability diagram: per confidence bin, its edges, how many pictures fell in it, their mean
    confidence and the share of them the model got right."""

    edges: np.ndarray  # BINS + 1
    counts: np.ndarray  # per bin (and one more for a confidence of exactly 1)
    confidence: np.ndarray
    accuracy: np.ndarray


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    """Bins [k/bins, (k+1)/bins) of the top-label confidence, a confidence of exactly 1 in a bin of its own (as
    torchmetrics bins them)."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = _bin_of(confidence, bins)
    counts = np.bincount(index, minlength=bins + 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins + 1) / counts
        accuracy = np.bincount(index, correct, minlength=bins + 1) / counts
    return Reliability(edges, counts, mean_confidence, accuracy)


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin: [k/bins, (k+1)/bins), and a confidence of exactly 1 in bin ``bins``, its own."""
    return np.searchsorted(np.linspace(0.0, 1.0, bins + 1), confidence, side="right") - 1


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Top-label ECE: the share-weighted mean gap |accuracy - confidence| over the bins."""
    probabilities = np.asarray(probabilities, np.float64)
    return ece_of(probabilities.max(1), probabilities.argmax(1) == np.asarray(labels), bins)


def ece_of(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """The ECE from each picture's top-label confidence and whether the top label was right (what a bootstrap
    over pictures resamples)."""
    confidence = np.asarray(confidence, np.float64)
    index = _bin_of(confidence, bins)
    counts = np.bincount(index, minlength=bins + 1)
    used = counts > 0
    gaps = np.bincount(index, confidence, minlength=bins + 1)[used] - np.bincount(index, np.asarray(correct, np.float64), minlength=bins + 1)[used]
    return float(np.abs(gaps).sum() / len(confidence))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per picture: -log p(true class)."""
    probabilities = np.asarray(probabilities, np.float64)
    return -np.log(np.clip(probabilities[np.arange(len(probabilities)), labels], TINY, 1.0))


def brier(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per picture: the squared distance between the probability vector and the one-hot truth (0 to 2)."""
    probabilities = np.asarray(probabilities, np.float64)
    truth = np.zeros_like(probabilities)
    truth[np.arange(len(probabilities)), labels] = 1.0
    return ((probabilities - truth) ** 2).sum(1)


def best_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimizing the mean NLL of softmax(logits / T) (temperature scaling): a bounded
    search over log T in [1/100, 100]; the NLL is convex in 1/T, so it has one minimum."""
    logits = np.asarray(logits, np.float64)
    rows = np.arange(len(logits))

    def loss(log_temperature: float) -> float:
        scaled = logits / np.exp(log_temperature)
        return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[rows, labels]))

    found = optimize.minimize_scalar(loss, bounds=(np.log(LOWEST), np.log(HIGHEST)), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(found.x))
