"""Objectives: what a technique explains, as one differentiable scalar per image taken from the model's output.

A target is text the user gives (``top1``, a class label or index, ``detection:0``, ``step:5`` ...). The
model's output decoder turns it into an ``Objective`` for the model's task (``Context.objective``): a class
score, a class summed over a region or over the model's own mask, one detection's score, a decoded text's
log-probability, the similarity to a second image's embedding. Every technique that takes a target takes an
objective, so a new task (a decoder plugin) works with every such technique at once.

Choices that depend on the model's own output (the predicted class, the K-th detection, the decoded text) are
made once, on the first outputs the objective sees, and then kept: ``score`` resolves lazily so a gradient
method needs one forward pass, and SmoothGrad's noisy copies, the sanity check's randomized models and the
faithfulness curves all explain the same thing (``take`` re-indexes the kept choices).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from viz_server.errors import UserError


@dataclass(frozen=True)
class Missing:
    """The choice for an image on which the target does not exist (a detector that detects nothing there):
    ``reason`` says why, in one sentence. ``Objective.resolve`` refuses it unless the caller leaves such images out."""

    reason: str


class Objective(ABC):
    """One target on the model's output. Subclasses implement ``choose`` (the per-image choices, from detached
    outputs; ``Missing(reason)`` for an image without the target, with ``can_miss`` set), ``selected`` (the
    differentiable scalars for given choices), ``probability`` (a value in [0, 1] per image, for curves and
    metrics) and ``describe`` (a caption for one choice)."""

    measure: str = "target probability"
    """What ``probability`` gives, in words (plots, tables and captions name it)."""
    can_miss: bool = False
    """Whether ``choose`` may find an image without the target (then a technique resolves it first and leaves such
    images out: ``viz_server_plugins.toolkit.objectives.without_missing``)."""

    def __init__(self, target: str):
        self.target = target
        self.choices: list[Any] | None = None
        self.seen: torch.Tensor | None = None  # the outputs the choices were made on (the clean images)

    # ---- what a subclass says -------------------------------------------------------------------------
    @abstractmethod
    def choose(self, outputs: torch.Tensor) -> list[Any]:
        """One choice per image from a batch of outputs (detached): a class index, a detection, a path ..."""

    @abstractmethod
    def selected(self, outputs: torch.Tensor, choices: list[Any]) -> torch.Tensor:
        """N differentiable scalars: the chosen target of each row of ``outputs``."""

    @abstractmethod
    def probability(self, outputs: np.ndarray, choices: list[Any]) -> np.ndarray:
        """N values in [0, 1] for the chosen targets (forward-only; deletion/insertion curves read these)."""

    @abstractmethod
    def describe(self, choice: Any) -> str:
        """What one image's choice is, for captions: "class circle", "detection 0: cat (0.91)" ..."""

    def details(self, choice: Any) -> dict[str, Any]:
        """JSON-ready facts about one choice for the result's metrics (the class, the box ...)."""
        return {}

    def overlay(self, picture: np.ndarray, choice: Any) -> np.ndarray | None:
        """The picture (H x W x 3 uint8, model resolution) with the target drawn on it, or None."""
        return None

    def predicted(self, outputs: np.ndarray) -> list[str]:
        """What the model predicts for each image, in the same terms (for the result's metrics)."""
        return [""] * len(outputs)

    # ---- shared machinery ---------------------------------------------------------------------------
    def resolve(self, outputs: torch.Tensor, allow_missing: bool = False) -> list[Any]:
        """Make the choices on these outputs unless they are made already; return them. They are made on a normal
        copy of the outputs, so that choices made under ``torch.inference_mode`` can enter a later backward pass.
        An image without the target is refused in one sentence, unless ``allow_missing`` (the caller then leaves
        the images ``missing()`` names out)."""
        if self.choices is None:
            with torch.inference_mode(False):
                self.seen = outputs.detach().clone()
                self.choices = list(self.choose(self.seen))
        missing = self.missing()
        if missing and not allow_missing:
            raise UserError(next(iter(missing.values())))
        return self.choices

    def missing(self) -> dict[int, str]:
        """Image index -> why the target does not exist there (empty when every image has it)."""
        return {index: choice.reason for index, choice in enumerate(self.choices or []) if isinstance(choice, Missing)}

    def score(self, outputs: torch.Tensor) -> torch.Tensor:
        """N differentiable scalars for a batch of outputs (choices made on the first batch seen)."""
        choices = self.resolve(outputs)
        if len(choices) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(choices)} kept choices; take() the images first")
        return self.selected(outputs, choices)

    def total(self, outputs: torch.Tensor) -> torch.Tensor:
        """The sum of ``score`` over the batch: what a gradient method differentiates."""
        return self.score(outputs).sum()

    def take(self, indices) -> Objective:
        """A copy whose kept choices are those of images ``indices`` (repeats allowed), for sub-batches."""
        if self.choices is None:
            raise ValueError("the objective has not chosen yet; score or resolve it on the images first")
        taken = copy.copy(self)
        taken.choices = [self.choices[int(i)] for i in indices]
        if self.seen is not None:  # the outputs the choices were made on, of the same images
            taken.seen = self.seen[[int(i) for i in indices]]
        return taken

    def repeat(self, times: int) -> Objective:
        """For ``times`` stacked copies of the batch (SmoothGrad's noisy copies)."""
        return self.take(list(range(len(self.choices or []))) * times)

    def captions(self) -> list[str]:
        return [self.describe(choice) for choice in self.choices or []]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "explained": self.captions(), "details": [self.details(choice) for choice in self.choices or []]}


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def refuse_target(target: str, task: str, expected: str) -> UserError:
    """The sentence for a target text the task does not understand."""
    return UserError(f"target {target!r} does not name anything in this {task} model's output; give {expected}.")
