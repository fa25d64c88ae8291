"""Labels for accuracy-style measurements. (What a technique explains, the objective, is the core's:
``viz_server.objectives``, made by the model's output decoder through ``ctx.objective(target, region)``.)"""

from __future__ import annotations

import torch


def reference_labels(ctx, clean_predictions: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The class each image should get, and where that came from: the image set's labels when every image has
    one, else the model's own clean predictions (accuracy then measures how stable the predictions are)."""
    known = [label for label in ctx.image_labels if label]
    if len(known) != len(ctx.image_labels) or not known:
        return clean_predictions, "clean predictions (the set has no labels)"
    return torch.tensor([ctx.model.spec.class_index(label) for label in ctx.image_labels]), "the image set's labels"


def class_scores(outputs: torch.Tensor) -> torch.Tensor:
    """N x C: one score per class, summed over the positions of a dense output (classifiers: the scores)."""
    return outputs.reshape(outputs.shape[0], outputs.shape[1], -1).sum(2)
