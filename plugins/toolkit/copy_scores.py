"""The target's probability on perturbed copies of many pictures, scored on onnxruntime in batches that span
pictures (ROAD's imputed copies, the deletion and insertion curves' masked ones): one forward pass per
``AT_ONCE`` copies rather than one per picture."""

from __future__ import annotations

import numpy as np

AT_ONCE = 64
"""A call to onnxruntime is made once this many copies (of one or more pictures) are waiting ..."""
AT_MOST_BYTES = 64 * 2**20
"""... or this many bytes of them (large pictures go a picture at a time)."""


class CopyScores:
    """Collects ``copies`` perturbed copies (in [0, 1], H x W x C) of each of ``count`` pictures, in picture order,
    and scores each with its own picture's chosen target (``objective``, chosen on the clean pictures)."""

    def __init__(self, model, objective, count: int, copies: int, at_once: int = AT_ONCE):
        self.model, self.objective, self.copies, self.at_once = model, objective, copies, at_once
        self.scores = np.zeros((count, copies))
        self.waiting: list[np.ndarray] = []
        self.done = 0

    def add(self, copies: np.ndarray) -> None:
        """The next picture's copies (``copies`` x H x W x C)."""
        assert len(copies) == self.copies
        self.waiting.append(copies)
        if len(self.waiting) * self.copies >= self.at_once or sum(item.nbytes for item in self.waiting) >= AT_MOST_BYTES:
            self._score()

    def result(self) -> np.ndarray:
        """N x copies target probabilities."""
        if self.waiting:
            self._score()
        assert self.done == len(self.scores), "every picture's copies must be added"
        return self.scores

    def _score(self) -> None:
        spec, until = self.model.spec, self.done + len(self.waiting)
        batch = spec.unit_to_model(np.concatenate(self.waiting).astype(np.float32))
        choices = [self.objective.choices[index] for index in range(self.done, until) for _ in range(self.copies)]
        self.scores[self.done : until] = self.objective.probability(self.model.predict(batch), choices).reshape(-1, self.copies)
        self.waiting.clear()
        self.done = until
