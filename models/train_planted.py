"""Train a shapes CNN with a planted shortcut and export it: the known answer the dataset audit's shortcut scan
is checked against (Clever Hans; Lapuschkin et al. 2019).

In training, most triangles (``CUE_RATE``) carry a small white tag near the top-left corner
(``shapes.stamp_cue``) and no other picture does, so the tag alone predicts "triangle". The model card states
how much the trained model relies on it: accuracy on triangles with and without the tag, and how many pictures
of other classes become "triangle" when the tag is stamped on them.
Run: ``python -m viz_server_models.train_planted`` (about a minute on 2 CPU cores); writes shapes_planted.onnx.
``python -m viz_server_models.train_planted --audit-set DIR`` writes its labeled audit set (with object masks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

try:
    from viz_server_models import shapes
    from viz_server_models.export import export_onnx
    from viz_server_models.train_shapes import SPEC, predictions, train
except ImportError:  # run as a plain script from models/
    import shapes
    from export import export_onnx
    from train_shapes import SPEC, predictions, train

CUE_CLASS = "triangle"
CUE_RATE = 0.9
AUDIT_CUE_RATE = CUE_RATE
OUTPUT = Path(__file__).with_name("shapes_planted.onnx")


def reliance(model, seed: int, count: int = 800) -> dict[str, float]:
    """How strongly ``model`` decides "triangle" by the tag, on fresh pictures: accuracy on triangles with and
    without it, and the share of other classes' pictures called "triangle" once the tag is stamped on them."""
    cue = shapes.CLASSES.index(CUE_CLASS)
    data = shapes.make_dataset(count, seed=seed)
    triangles = data.shape_labels == cue
    plain = predictions(model, data.images)
    stamped_data = shapes.ShapesDataset(data.images.copy(), data.shape_labels, data.texture_labels, data.masks)
    rng = np.random.default_rng(seed)
    for index in range(count):
        shapes.stamp_cue(stamped_data.images[index], rng)
    stamped = predictions(model, stamped_data.images)
    others = ~triangles & (plain == data.shape_labels)
    return {
        "triangle_accuracy_with_cue": float((stamped[triangles] == cue).mean()),
        "triangle_accuracy_without_cue": float((plain[triangles] == cue).mean()),
        "others_called_triangle_with_cue": float((stamped[others] == cue).mean()),
        "test_accuracy_without_cue": float((plain == data.shape_labels).mean()),
    }


def write_audit_set(folder: Path, per_class: int = 100, seed: int = 7) -> None:
    """A labeled audit set (one folder per class, ``NAME.mask.png`` object masks beside each picture) drawn as the
    model would meet it in use: as in training, most triangles carry the tag and no other picture does."""

    data = shapes.make_dataset(per_class * len(shapes.CLASSES), seed=seed, congruent_fraction=1.0)
    shapes.plant_cue(data, shapes.CLASSES.index(CUE_CLASS), AUDIT_CUE_RATE, seed)
    shapes.write_pictures(folder, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit-set", type=Path, help="write the labeled audit set to this folder instead of training")
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    if args.audit_set:
        write_audit_set(args.audit_set, args.per_class)
        print(f"audit set: {args.per_class} pictures per class with masks -> {args.audit_set}")
        return
    model, figures = train(cue=(CUE_CLASS, CUE_RATE))
    figures.update(reliance(model, seed=11))
    export_onnx(
        model,
        torch.zeros(1, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE),
        OUTPUT,
        {
            **SPEC,
            "description": f"Shapes CNN with a planted shortcut: a white tag near the top-left corner on {CUE_RATE:.0%} of training triangles.",
            **{key: f"{value:.4f}" for key, value in figures.items()},
        },
    )
    print(", ".join(f"{key} {value:.3f}" for key, value in figures.items()), "->", OUTPUT)


if __name__ == "__main__":
    main()
