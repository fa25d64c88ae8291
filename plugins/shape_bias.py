"""Texture-vs-shape cue-conflict probe (Geirhos et al. 2019, "ImageNet-trained CNNs are biased towards texture").

Each stimulus has the shape of one category and the texture of another. The model's decision is the probe
category with the highest mean probability over the model classes mapped to it. Stimuli whose shape and
texture agree, and decisions matching neither cue, are ignored:
shape bias = shape decisions / (shape decisions + texture decisions).

Stimuli: generated from viz_server_models.shapes (ground truth known; works out of the box for the shipped
shapes model), or the given images named ``shapeclass-textureclass[-anything].png``. Forward-only, batched,
on the onnxruntime session.
"""

from __future__ import annotations

import json

import numpy as np

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.techniques import Artifact, Context, Param, Result, Technique, proportion_headline


def parse_mapping(text: str, spec) -> dict[str, list[int]]:
    """Probe category -> model class indices. Empty: every model label is its own category."""
    if not text.strip():
        if not spec.labels:
            raise UserError("this model has no labels; give a mapping of probe categories to model classes.")
        return {label: [index] for index, label in enumerate(spec.labels)}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raw = {}
        for part in text.split(";"):
            if ":" not in part:
                raise UserError(f"mapping {text!r} must be JSON or 'category:class|class;category:class'.") from None
            category, classes = part.split(":", 1)
            raw[category.strip()] = [c.strip() for c in classes.split("|") if c.strip()]
    if not isinstance(raw, dict) or not raw:
        raise UserError("the mapping must name at least one probe category.")
    return {str(category): [spec.class_index(c) for c in (classes if isinstance(classes, list) else [classes])] for category, classes in raw.items()}


def shape_bias(decisions: list[str], shapes: list[str], textures: list[str]) -> dict:
    """The cue-conflict statistic on a decision table (conflicting stimuli only)."""
    shape_hits = texture_hits = neither = ignored = 0
    for decision, shape, texture in zip(decisions, shapes, textures):
        if shape == texture:
            ignored += 1
        elif decision == shape:
            shape_hits += 1
        elif decision == texture:
            texture_hits += 1
        else:
            neither += 1
    decided = shape_hits + texture_hits
    return {
        "shape_bias": round(shape_hits / decided, 4) if decided else None,
        "shape_decisions": shape_hits,
        "texture_decisions": texture_hits,
        "neither": neither,
        "ignored_same_cue": ignored,
    }


class ShapeBias(Technique):
    name = "shape_bias"
    title = "Texture vs shape bias"
    family = "robustness"
    tasks = ("classification",)
    summary = "Cue-conflict stimuli (shape of one class, texture of another): does the model follow shape or texture? (Geirhos et al. 2019)"
    params = (
        Param(
            "stimuli",
            "choice",
            "generated",
            "Generated textured shapes (known ground truth) or the given images named shape-texture.png.",
            choices=("generated", "given"),
        ),
        Param("per_pair", "int", 10, "Generated stimuli per (shape, texture) pair.", minimum=1, maximum=200),
        Param("mapping", "str", "", "Probe category -> model classes, JSON or 'cat:cls|cls;...'; empty = the model's own labels."),
    )
    inputs = ()

    def run(self, ctx: Context, params: dict) -> Result:
        model, spec = ctx.model, ctx.model.spec
        mapping = parse_mapping(params["mapping"], spec)
        if params["stimuli"] == "generated":
            from viz_server_models import shapes

            stimuli = shapes.cue_conflict_set(per_pair=params["per_pair"], seed=ctx.seed, size=shapes.IMAGE_SIZE)
            batch = spec.unit_to_model(self._resize(stimuli.images, spec))
            shape_names = [shapes.CLASSES[i] for i in stimuli.shape_labels]
            texture_names = [shapes.CLASSES[i] for i in stimuli.texture_labels]
        else:
            if ctx.images is None or not len(ctx.images):
                raise UserError("stimuli=given needs images named shapeclass-textureclass.png.")
            batch = ctx.images.numpy()
            shape_names, texture_names = [], []
            for name in ctx.image_names:
                parts = name.rsplit(".", 1)[0].split("-")
                if len(parts) < 2:
                    raise UserError(f"image {name} is not named shapeclass-textureclass.png.")
                shape_names.append(parts[0])
                texture_names.append(parts[1])
        unknown = sorted({n for n in shape_names + texture_names if n not in mapping})
        if unknown:
            raise UserError(f"the stimuli use categories {', '.join(unknown)} that the mapping does not name; add them to the mapping.")
        scores = model.predict(batch)
        probabilities = np.exp(scores - scores.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        categories = list(mapping)
        per_category = np.stack([probabilities[:, mapping[c]].mean(1) for c in categories], axis=1)
        decisions = [categories[i] for i in per_category.argmax(1)]
        figures = shape_bias(decisions, shape_names, texture_names)
        ctx.progress(1, 1, f"shape bias {figures['shape_bias']}")
        rows = [["shape", "texture", "shape decisions", "texture decisions", "neither"]]
        for shape in categories:
            for texture in categories:
                chosen = [i for i, (s, t) in enumerate(zip(shape_names, texture_names)) if s == shape and t == texture]
                if chosen and shape != texture:
                    picks = [decisions[i] for i in chosen]
                    rows.append([shape, texture, picks.count(shape), picks.count(texture), len(picks) - picks.count(shape) - picks.count(texture)])
        return Result(
            artifacts=[Artifact("cue_conflict.csv", "decisions per (shape, texture) pair", kind="table", rows=rows, group="shape bias")],
            arrays={"category_probabilities": per_category.astype(np.float32)},
            metrics={
                **figures,
                "stimuli": len(decisions),
                "source": params["stimuli"],
                "headline": {
                    "shape_bias": proportion_headline(
                        figures["shape_decisions"],
                        figures["shape_decisions"] + figures["texture_decisions"],
                        "shape bias on cue-conflict images (1 = always shape; n = shape or texture decisions)",
                        None,
                    )
                },
            },
            caveats=[
                "Shape bias is defined on cue-conflict stimuli only; it says which cue wins when they disagree, "
                "not how well the model recognizes either cue alone."
            ],
        )

    @staticmethod
    def _resize(images: np.ndarray, spec) -> np.ndarray:
        from PIL import Image

        pictures = [Image.fromarray(image) for image in images]
        return np.stack([spec.picture_to_unit(picture) for picture in pictures]).astype(np.float32)


@hookimpl
def register_techniques():
    return [ShapeBias()]
