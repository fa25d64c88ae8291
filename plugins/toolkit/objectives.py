"""What a class attribution explains: one scalar per image taken from the model's main output.

- Classifiers (N x K scores): the pre-softmax score of the target class.
- Dense outputs (segmenters N x C x H x W, detectors N x C x ...): the target channel summed over the whole
  output, or over a ``region`` ``ROW0:ROW1,COL0:COL1`` of its spatial grid.
Probabilities (for metrics and deletion/insertion curves) are the softmax over the class axis, averaged over
the same positions.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server.errors import UserError


def parse_region(text: str) -> tuple[slice, slice] | None:
    text = str(text or "").strip()
    if not text:
        return None
    try:
        rows, columns = text.replace(" ", "").split(",")
        (r0, r1), (c0, c1) = (tuple(int(v) for v in part.split(":")) for part in (rows, columns))
    except ValueError:
        raise UserError(f"region {text!r} must look like ROW0:ROW1,COL0:COL1 (e.g. 0:8,4:12) or be empty.") from None
    if r1 <= r0 or c1 <= c0 or min(r0, c0) < 0:
        raise UserError(f"region {text!r} is empty; give ROW0 < ROW1 and COL0 < COL1.")
    return slice(r0, r1), slice(c0, c1)


def _per_position(scores: torch.Tensor, region) -> torch.Tensor:
    """N x C x positions: the output with everything after the class axis flattened (region applied)."""
    if scores.dim() == 2:
        if region is not None:
            raise UserError("a region only applies to dense outputs (N x C x H x W); this model outputs one score per class.")
        return scores[:, :, None]
    if region is not None:
        if scores.dim() != 4:
            raise UserError(f"a region needs an N x C x H x W output; this model's output has shape {list(scores.shape)}.")
        rows, columns = region
        if rows.stop > scores.shape[2] or columns.stop > scores.shape[3]:
            raise UserError(
                f"region rows {rows.start}:{rows.stop}, columns {columns.start}:{columns.stop} fall outside the "
                f"output grid of {scores.shape[2]} x {scores.shape[3]}."
            )
        scores = scores[:, :, rows, columns]
    return scores.flatten(2)


def class_scores(scores: torch.Tensor, region=None) -> torch.Tensor:
    """N x C: one score per class (summed over output positions) - what top-1 and targets are resolved on."""
    return _per_position(scores, region).sum(2)


class TargetsFromScores:
    """Target classes chosen from the scores of the attribution's own forward pass.

    The "predicted" target needs the scores, and a gradient method computes them anyway: handing this object
    where a target tensor goes saves a whole forward pass. ``selected_score`` resolves it on first use and
    keeps the scores it saw; later uses (Guided Grad-CAM's second pass) get the same classes.
    """

    def __init__(self, choose, region=None):
        self.choose, self.region = choose, region  # choose: N x C class scores -> N class indices
        self.indices: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None

    def resolve(self, scores: torch.Tensor) -> torch.Tensor:
        if self.indices is None:
            self.scores = scores.detach()
            self.indices = self.choose(class_scores(self.scores, self.region))
        return self.indices


def selected_score(scores: torch.Tensor, targets, region=None) -> torch.Tensor:
    """The differentiable scalar whose gradient every class attribution follows (summed over images).

    ``targets``: one class index per image, or a ``TargetsFromScores`` resolved on these scores."""
    if isinstance(targets, TargetsFromScores):
        targets = targets.resolve(scores)
    per_class = class_scores(scores, region)
    return per_class.gather(1, targets[:, None]).sum()


def target_probability(scores, targets, region=None) -> np.ndarray:
    """Softmax probability of each image's target class (averaged over the output positions considered)."""
    scores = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores)
    probabilities = torch.softmax(_per_position(scores.float(), region), dim=1).mean(2)
    return probabilities.gather(1, torch.as_tensor(np.asarray(targets)).long()[:, None])[:, 0].numpy()


def reference_labels(ctx, clean_predictions: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The class each image should get, and where that came from: the image set's labels when every image has
    one, else the model's own clean predictions (accuracy then measures how stable the predictions are)."""
    known = [label for label in ctx.image_labels if label]
    if len(known) != len(ctx.image_labels) or not known:
        return clean_predictions, "clean predictions (the set has no labels)"
    return torch.tensor([ctx.model.spec.class_index(label) for label in ctx.image_labels]), "the image set's labels"
