"""Running one technique: decode inputs, validate params, build the Context, call ``run``, stamp provenance.

This is the single function every front end uses (the CLI now, the job workers later).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

import viz_server
from viz_server.errors import UserError
from viz_server.installed import check_applies, get_technique
from viz_server.model.images import decode_image
from viz_server.model.loaded import LoadedModel
from viz_server.model.verify import check_inputs
from viz_server.picture_stream import PictureStream, masks_given, picture_names
from viz_server.techniques import CONTRACT_VERSION, MAX_DATASET_PICTURES, MAX_IMAGES_PER_RUN, Context, Result, Technique, validate_params


def run_technique(
    technique: Technique | str,
    model: LoadedModel,
    images: Sequence[tuple[str, bytes]] = (),
    raw_params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    second_image: tuple[str, bytes] | None = None,
    labels: Sequence[str | None] | None = None,
    masks: Sequence[bytes | None] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    spread: Callable[..., np.ndarray] | None = None,
) -> Result:
    """Run a technique (an instance, or an installed one by name) on ``model``; return its Result with provenance.
    ``images`` (name, bytes) and ``masks`` may be ``picture_stream.Deferred``: a technique that reads a whole set
    (the ``dataset`` input) then reads them chunk by chunk, and its per-picture works go through ``spread`` where a
    job runner gives one (``jobs.shards.Spread``)."""
    if isinstance(technique, str):
        technique = get_technique(technique)
    params = validate_params(technique.params, dict(raw_params or {}))
    check_applies(technique, model.spec.task, model.name, model.forward_only)
    if not 0 <= int(seed) < 2**31:
        raise UserError("seed must be a whole number between 0 and 2147483647.")
    streamed = "dataset" in technique.inputs
    if {"image", "image_set", "dataset"} & set(technique.inputs) and not len(images):
        raise UserError(f"{technique.name} needs at least one image; give one with --image (or a labeled set with --image-set).")
    if labels is not None and len(labels) != len(images):
        raise UserError("give one label per image (or none).")
    if masks is not None and len(masks) != len(images):
        raise UserError("give one object mask (or None) per image.")
    limit = MAX_DATASET_PICTURES if streamed else MAX_IMAGES_PER_RUN
    if len(images) > limit:
        raise UserError(f"{len(images)} images were given; at most {limit} fit in one run of {technique.name}.")
    if "second_image" in technique.inputs and second_image is None:
        raise UserError(f"{technique.name} needs a second image; give one with --second-image.")

    spec = model.spec
    batch = None
    names = picture_names(images)
    image_labels = list(labels) if labels is not None else [None] * len(names)
    stream = PictureStream(model, images, image_labels, masks, spread) if streamed else None
    object_masks: list = []
    if len(images) and not streamed:
        pictures = [decode_image(data, name, fit=(spec.height, spec.width)) for name, data in images]
        batch = torch.from_numpy(spec.preprocess(pictures))
        check_inputs(model, batch.numpy())
        object_masks = [
            spec.picture_to_mask(decode_image(data, f"mask of {name}", fit=(spec.height, spec.width))) if data else None
            for name, data in zip(names, masks or [None] * len(names))
        ]
    second = None
    if second_image is not None:
        second = torch.from_numpy(spec.preprocess([decode_image(second_image[1], second_image[0], fit=(spec.height, spec.width))]))

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    ctx = Context(
        model=model,
        images=batch,
        image_names=names,
        image_labels=image_labels,
        image_masks=object_masks,
        second_image=second,
        pictures=stream,
        seed=int(seed),
        on_progress=on_progress,
        is_cancelled=is_cancelled,
    )
    started = time.perf_counter()
    result = technique.run(ctx, params)
    guessed = model.spec.guessed_input()
    result.caveats = [*([guessed] if guessed else []), *model.conversion.caveats, *result.caveats]
    if batch is not None:
        result.arrays.setdefault("inputs", batch.detach().numpy())  # the model-space images behind every input picture
    result.provenance = {
        "technique": technique.name,
        "technique_version": technique.version,
        "viz_server_version": viz_server.__version__,
        "contract_version": CONTRACT_VERSION,
        "params": params,
        "seed": int(seed),
        "model": {"name": model.name, "sha256": model.sha256},
        "spec": model.spec.to_json(),
        "images": ctx.image_names,
        "second_image": second_image[0] if second_image is not None else None,
        "labels": ctx.image_labels,
        "masks": masks_given(masks, len(names)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 4),
    }
    return result
