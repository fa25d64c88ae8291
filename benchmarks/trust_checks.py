"""A saliency job with its default checks against the same evidence assembled from the reference libraries.

Ours: ``run_technique("saliency", ...)`` with defaults: the map, the model-parameter randomization test on the
first image (top 3 weight layers one after another, then all), deletion and insertion curves (8 steps each) on
every image, masks, boxes and every picture rendered.

Reference: Captum's ``Saliency`` on the native module for the map, Quantus' ``MPRT`` (cascading top-down
randomization of every layer, the first image) and Quantus' ``PixelFlipping`` (deletion only, in 8 steps:
``features_in_step`` = pixels / 8) on every image. No pictures.

Run: ``python -m benchmarks.trust_checks [--models resnet18,mobilenet_v2] [--batch 8] [--size 224] [--repeats 2]``
(needs quantus: ``pip install --no-deps quantus==0.6.0``).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from benchmarks.gradients import shape_pictures
from viz_server.model.images import decode_image
from viz_server.model.pipeline import load_model
from viz_server.runner import run_technique


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import quantus
    from captum.attr import Saliency

    print(software_line("captum", "quantus"))
    print(f"batch {args.batch} at {args.size}x{args.size}, median of {args.repeats} after a warm-up\n")
    rows = []
    pictures = shape_pictures(args.batch, args.size)
    for name in args.models.split(","):
        native = torchvision.models.get_model(name, weights=None).eval()
        model = load_model(export_native(native, args.size), use_cache=False)
        batch = model.spec.preprocess([decode_image(data) for _, data in pictures])
        with torch.no_grad():
            targets = native(torch.from_numpy(batch)).argmax(1).numpy()

        def explain(model, inputs, targets, **_):
            inputs = torch.as_tensor(np.asarray(inputs, np.float32))
            return Saliency(model).attribute(inputs, target=torch.as_tensor(targets)).abs().amax(1, keepdim=True).detach().numpy()

        def reference():
            maps = explain(native, batch, targets)
            quantus.MPRT(disable_warnings=True, display_progressbar=False)(
                model=native, x_batch=batch[:1], y_batch=targets[:1], a_batch=maps[:1], explain_func=explain, device="cpu"
            )
            quantus.PixelFlipping(features_in_step=args.size * args.size // 8, perturb_baseline="mean", disable_warnings=True, display_progressbar=False)(
                model=native, x_batch=batch, y_batch=targets, a_batch=maps, device="cpu"
            )

        ours = median_seconds(lambda: run_technique("saliency", model, pictures), args.repeats)
        theirs = median_seconds(reference, args.repeats)
        rows.append(f"| {name} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |")
        print(rows[-1], flush=True)
    print("\nsaliency job with its default checks vs Captum + Quantus MPRT + Quantus pixel flipping\n")
    print("| model | ours s | Captum + Quantus s | ratio |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
