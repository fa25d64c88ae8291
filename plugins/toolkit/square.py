"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"), L-inf.

Gradient-free: it only asks the model for scores, so gradient masking cannot stop it. Start from vertical
stripes of +/- epsilon; then, for a number of queries, repaint one random square window (its side shrinking on
the paper's schedule) with a random +/- epsilon colour per channel and keep the change when the margin loss
(true logit minus the best other) falls. An image is broken when its margin is negative. Forward-only, so it
runs on onnxruntime through ``predict`` (a batch of unit-space images -> logits).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SCHEDULE = ((10, 1 / 2), (50, 1 / 4), (200, 1 / 8), (500, 1 / 16), (1000, 1 / 32), (2000, 1 / 64), (4000, 1 / 128), (6000, 1 / 256), (8000, 1 / 512))
"""(query among 10,000, factor of p_init from there on): the paper's schedule, rescaled to the query budget."""


def window_fraction(p_init: float, query: int, queries: int) -> float:
    at = int(query / queries * 10000)
    factor = 1.0
    for start, value in SCHEDULE:
        if at > start:
            factor = value
    return p_init * factor


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True logit minus the best other: negative means the image is misclassified."""
    true = logits[np.arange(len(logits)), labels]
    others = logits.copy()
    others[np.arange(len(logits)), labels] = -np.inf
    return true - others.max(1)


def square_attack(
    predict: Callable[[np.ndarray], np.ndarray],
    unit: np.ndarray,
    labels: np.ndarray,
    epsilon: float,
    queries: int = 300,
    rng: np.random.Generator | None = None,
    p_init: float = 0.8,
    on_query: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(adversarial images, success per image, queries used) for N x H x W x C unit-space images."""
    rng = rng or np.random.default_rng(0)
    original = unit.astype(np.float32)
    count, height, width, channels = original.shape
    stripes = rng.choice([-epsilon, epsilon], size=(count, 1, width, channels)).astype(np.float32)
    current = np.clip(original + stripes, 0.0, 1.0)
    loss = margins(predict(current), labels)
    used = 1
    for query in range(queries):
        active = np.nonzero(loss > 0)[0]
        if not len(active):
            break
        side = int(round(np.sqrt(window_fraction(p_init, query, queries) * height * width)))
        side = min(max(side, 1), height - 1, width - 1) if min(height, width) > 1 else 1
        candidate = current[active].copy()
        for row, index in enumerate(active):
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            colour = rng.choice([-epsilon, epsilon], size=(1, 1, channels)).astype(np.float32)
            candidate[row, top : top + side, left : left + side] = original[index, top : top + side, left : left + side] + colour
        candidate = np.clip(original[active] + np.clip(candidate - original[active], -epsilon, epsilon), 0.0, 1.0)
        new_loss = margins(predict(candidate), labels[active])
        used += 1
        better = new_loss < loss[active]
        current[active[better]] = candidate[better]
        loss[active[better]] = new_loss[better]
        if on_query is not None:
            on_query(query)
    return current, loss < 0, used
