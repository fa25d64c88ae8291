"""Objectives in a technique's hands: images without the target left out, and labels for accuracy-style
measurements. (What a technique explains, the objective, is the core's: ``viz_server.objectives``, made by the
model's output decoder through ``ctx.objective(target, region)``.)"""

from __future__ import annotations

from dataclasses import replace

import torch

from viz_server.errors import UserError
from viz_server.objectives import Objective
from viz_server.techniques import Context


def resolved_without_missing(ctx: Context, images: torch.Tensor, objective: Objective) -> tuple[Context, torch.Tensor, Objective, list[str]]:
    """Choose the objective's targets on the clean images (one forward pass) and leave out the images that have
    none (a detector that detects nothing there): the context, images and objective of the images kept, and a
    caveat naming each image left out and why. Refuses, naming the first reason, when no image has the target."""
    with torch.no_grad():
        objective.resolve(ctx.model.outputs(images), allow_missing=True)
    missing = objective.missing()
    if not missing:
        return ctx, images, objective, []
    names = [ctx.image_names[index] if index < len(ctx.image_names) else f"image {index}" for index in range(len(images))]
    if len(missing) == len(images):
        others = f" (and on every other of the {len(images)} images)" if len(images) > 1 else ""
        raise UserError(missing[0].rstrip(".") + others + ".")
    kept = [index for index in range(len(images)) if index not in missing]
    left_out = "; ".join(f"{names[index]}: {reason.rstrip('.')}" for index, reason in missing.items())
    caveat = f"{len(missing)} of {len(images)} images were left out, having no target to explain ({left_out}); every figure here is over the other {len(kept)}."
    reduced = replace(
        ctx,
        images=ctx.images[kept] if ctx.images is not None else None,
        image_names=[names[index] for index in kept],
        image_labels=[ctx.image_labels[index] for index in kept] if ctx.image_labels else [],
        image_masks=[ctx.image_masks[index] for index in kept] if ctx.image_masks else [],
    )
    return reduced, images[kept], objective.take(kept), [caveat]


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
