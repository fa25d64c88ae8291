"""Classifiers and dense class maps.

- Classifiers (N x C scores): a target is a class, by label or index (a label always wins when the text
  matches one; ``index:N`` forces an index), or ``top1``, each image's predicted class. The objective is the
  class's pre-softmax score (Simonyan et al. 2014); its probability is the softmax.
- Dense maps (segmenters, N x C x H x W): the class's score summed over the whole output, over a ``region``
  ``ROW0:ROW1,COL0:COL1`` of the output grid, or (``region=mask``) over the positions where the model itself
  predicts that class. Probabilities are the softmax over the class axis, averaged over the same positions.
- One-channel dense maps (a DB text detector's N x 1 x H x W): the channel is a probability of its own (the
  model's final Sigmoid) or a logit, never a softmax over one channel (always 1); the model predicts the class
  where that probability exceeds ``THRESHOLD``.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server.errors import UserError
from viz_server.objectives import Missing, Objective, softmax
from viz_server.tasks import OutputDecoder, OutputInfo

TOP = 5
TOP1 = ("top1", "top-1", "predicted", "")
THRESHOLD = 0.5
"""Where a one-channel map's probability exceeds this, the model predicts its class (``region=mask``, areas)."""
SIGMOID_OPS = ("Sigmoid", "HardSigmoid")


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(values, np.float64)))


def class_chances(per_position: np.ndarray, squashed: bool) -> np.ndarray:
    """N x C x P scores -> N x C x P probabilities: a softmax over the classes, or for one channel its own value
    (``squashed``: the model's final Sigmoid made it a probability) or the sigmoid of its logit."""
    per_position = np.asarray(per_position, np.float64)
    if per_position.shape[1] == 1:
        return np.clip(per_position, 0.0, 1.0) if squashed else sigmoid(per_position)
    return softmax(per_position, axis=1)


def predicted_positions(per_position, squashed: bool):
    """N x P: the class the model predicts at each position (one channel: 0 where its probability exceeds
    ``THRESHOLD``, -1 elsewhere); tensors in, tensors out."""
    if per_position.shape[1] != 1:
        return per_position.argmax(1)
    chances = per_position[:, 0] if squashed else per_position[:, 0].sigmoid() if isinstance(per_position, torch.Tensor) else sigmoid(per_position[:, 0])
    above = chances > THRESHOLD
    return above.long() - 1 if isinstance(above, torch.Tensor) else above.astype(np.int64) - 1


def parse_region(text: str) -> tuple[slice, slice] | str | None:
    """``ROW0:ROW1,COL0:COL1`` -> two slices; ``mask`` -> "mask"; empty -> None."""
    text = str(text or "").strip()
    if not text:
        return None
    if text.lower() == "mask":
        return "mask"
    try:
        rows, columns = text.replace(" ", "").split(",")
        (r0, r1), (c0, c1) = (tuple(int(v) for v in part.split(":")) for part in (rows, columns))
    except ValueError:
        raise UserError(f"region {text!r} must look like ROW0:ROW1,COL0:COL1 (e.g. 0:8,4:12), be mask, or be empty.") from None
    if r1 <= r0 or c1 <= c0 or min(r0, c0) < 0:
        raise UserError(f"region {text!r} is empty; give ROW0 < ROW1 and COL0 < COL1.")
    return slice(r0, r1), slice(c0, c1)


class ClassObjective(Objective):
    """A class's score (summed over the chosen positions of a dense output). A choice is the class index, and
    for ``region=mask`` also the positions the model gave that class on the clean image."""

    def __init__(self, target: str, spec, region=None, squashed: bool = False):
        super().__init__(target)
        self.spec, self.region, self.squashed = spec, region, squashed
        self.can_miss = region == "mask"  # an image where the model predicts the class nowhere is left out
        self.fixed = None if str(target).strip().lower() in TOP1 else spec.class_index(target)

    def positions(self, outputs):
        """N x C x P: the output with the axes after the class axis flattened (a rectangular region applied)."""
        region = self.region
        if outputs.ndim == 2:
            if region is not None:
                raise UserError("a region only applies to dense outputs (N x C x H x W); this model outputs one score per class.")
            return outputs[:, :, None]
        if isinstance(region, tuple):
            if outputs.ndim != 4:
                raise UserError(f"a rectangular region needs an N x C x H x W output; this model's output has shape {list(outputs.shape)}.")
            rows, columns = region
            if rows.stop > outputs.shape[2] or columns.stop > outputs.shape[3]:
                raise UserError(
                    f"region rows {rows.start}:{rows.stop}, columns {columns.start}:{columns.stop} fall outside the "
                    f"output grid of {outputs.shape[2]} x {outputs.shape[3]}."
                )
            outputs = outputs[:, :, rows, columns]
        return outputs.reshape(outputs.shape[0], outputs.shape[1], -1)

    def choose(self, outputs):
        if outputs.ndim > 2 and outputs.shape[1] == 1 and not self.squashed:  # as the decoder reads it: values in [0, 1] are probabilities
            self.squashed = bool(((outputs >= 0) & (outputs <= 1)).all())
        per_class = self.positions(outputs).sum(2)
        if self.fixed is not None and self.fixed >= per_class.shape[1]:
            raise UserError(f"class {self.fixed} is out of range: the model has {per_class.shape[1]} outputs.")
        classes = [self.fixed] * len(outputs) if self.fixed is not None else per_class.argmax(1).tolist()
        if self.region != "mask":
            return [int(c) for c in classes]
        winners = predicted_positions(self.positions(outputs), self.squashed)  # N x P
        chosen = []
        for index, (c, won) in enumerate(zip(classes, winners)):
            mask = won == c
            if not bool(mask.any()):
                chosen.append(Missing(f"the model predicts {self.spec.label(int(c))} nowhere on image {index}; pick another class or a rectangular region."))
                continue
            chosen.append((int(c), mask))
        return chosen

    def _split(self, choices):
        classes = [c[0] if isinstance(c, tuple) else c for c in choices]
        masks = [c[1] for c in choices] if self.region == "mask" else None
        return classes, masks

    def selected(self, outputs, choices):
        per = self.positions(outputs)
        classes, masks = self._split(choices)
        rows = per[torch.arange(len(per)), torch.as_tensor(classes, device=per.device)]  # N x P
        if masks is not None:
            rows = rows * torch.stack(masks).to(rows)
        return rows.sum(1)

    def probability(self, outputs, choices):
        chances = class_chances(self.positions(np.asarray(outputs, np.float64)), self.squashed)  # N x C x P
        classes, masks = self._split(choices)
        picked = chances[np.arange(len(chances)), classes]  # N x P
        if masks is None:
            return picked.mean(1)
        weights = np.stack([np.asarray(mask, np.float64) for mask in masks])
        return (picked * weights).sum(1) / weights.sum(1)

    def describe(self, choice):
        index = choice[0] if isinstance(choice, tuple) else choice
        where = ""
        if isinstance(choice, tuple):
            one_channel = choice[1].ndim == 1 and self.seen is not None and self.seen.shape[1] == 1
            where = f" where the model's probability exceeds {THRESHOLD:g}" if one_channel else " where the model predicts it"
        return f"class {self.spec.label(index)}{where}"

    def details(self, choice):
        index = choice[0] if isinstance(choice, tuple) else choice
        return {"class": self.spec.label(index), "index": int(index)}

    def predicted(self, outputs):
        per_class = self.positions(np.asarray(outputs)).sum(2)
        return [self.spec.label(int(i)) for i in per_class.argmax(1)]


class ClassScores(OutputDecoder):
    name = "class_scores"
    task = "classification"
    summary = "One pre-softmax score per class (N x C); predictions are the top classes by softmax probability."
    targets = "top1 (each image's predicted class), a class label, or a class index (index:N forces an index)"

    def recognizes(self, output: OutputInfo) -> bool:
        return len(output.shape) == 2

    def decode(self, outputs, spec):
        probabilities = softmax(np.asarray(outputs, np.float64), axis=1)
        decoded = []
        for scores, chances in zip(outputs, probabilities):
            order = np.argsort(-scores, kind="stable")[:TOP]
            decoded.append(
                {
                    "top": [
                        {"class": spec.label(int(i)), "index": int(i), "score": round(float(scores[i]), 6), "probability": round(float(chances[i]), 6)}
                        for i in order
                    ]
                }
            )
        return decoded

    def objective(self, target, ctx, region=""):
        return ClassObjective(target, ctx.model.spec, parse_region(region), squashed=ctx.model.conversion.output_op in SIGMOID_OPS)

    def suggested_targets(self, spec, output_shape):
        return class_targets(spec)


def class_targets(spec: dict) -> list[tuple[str, str]]:
    """top1, then every class by label (or by index when the model has no labels)."""
    labels = spec.get("labels") or []
    classes = [(label, f"{index}: {label}") for index, label in enumerate(labels)] or [(str(i), str(i)) for i in range(spec.get("num_classes") or 0)]
    return [("top1", "top1: each image's predicted class"), *classes]


class DenseClassMap(OutputDecoder):
    name = "dense_class_map"
    task = "dense"
    summary = "A score map per class (N x C x ...); predictions are the classes covering most positions."
    targets = (
        "top1, a class label or index, summed over the output, over region ROW0:ROW1,COL0:COL1 of the output "
        "grid, or over region=mask (where the model predicts that class)"
    )

    def recognizes(self, output: OutputInfo) -> bool:
        return len(output.shape) >= 3

    def decode(self, outputs, spec):
        decoded = []
        outputs = np.asarray(outputs)
        squashed = bool(((outputs >= 0) & (outputs <= 1)).all())  # one channel: probabilities already, else logits
        for scores in outputs:
            winners = predicted_positions(scores.reshape(1, scores.shape[0], -1), squashed)[0]
            counts = np.bincount(winners[winners >= 0], minlength=scores.shape[0])
            order = np.argsort(-counts, kind="stable")[:TOP]
            decoded.append(
                {"top": [{"class": spec.label(int(i)), "index": int(i), "area": round(float(counts[i] / winners.size), 6)} for i in order if counts[i]]}
            )
        return decoded

    def objective(self, target, ctx, region=""):
        return ClassObjective(target, ctx.model.spec, parse_region(region), squashed=ctx.model.conversion.output_op in SIGMOID_OPS)

    def suggested_targets(self, spec, output_shape):
        return class_targets(spec)
