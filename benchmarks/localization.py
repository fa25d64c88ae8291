"""Localization and trust table of every attribution method on the shipped shapes model.

Run: ``python -m benchmarks.localization [--images 40] [--sanity-images 5]``. For fresh generated images with
known object masks: pointing game (share of maps whose maximum lies on the object), mean energy inside the
mask, mean deletion and insertion AUC, and the share of sanity checks passed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from viz_server.model.pipeline import load_model
from viz_server.testing import objective_for
from viz_server_models import shapes, shipped_models
from viz_server_plugins.deconvnet import Deconvnet
from viz_server_plugins.gradcam import GradCAM
from viz_server_plugins.guided_backprop import GuidedBackprop
from viz_server_plugins.guided_gradcam import GuidedGradCAM
from viz_server_plugins.saliency import Saliency
from viz_server_plugins.toolkit import faithfulness, localization, sanity

METHODS = [
    ("saliency", Saliency(), {}),
    ("saliency + SmoothGrad", Saliency(), {"smooth_samples": 16}),
    ("guided backprop", GuidedBackprop(), {}),
    ("deconvnet", Deconvnet(), {}),
    ("Grad-CAM", GradCAM(), {}),
    ("Grad-CAM++", GradCAM(), {"weighting": "gradcam++"}),
    ("Guided Grad-CAM", GuidedGradCAM(), {}),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--sanity-images", type=int, default=5)
    args = parser.parse_args()
    model = load_model(shipped_models()["shapes_cnn"])
    data = shapes.make_dataset(args.images, seed=2024, congruent_fraction=1.0)
    images = torch.from_numpy(model.spec.unit_to_model(data.images.astype(np.float32) / 255.0))
    targets = torch.from_numpy(data.shape_labels).long()
    objective = objective_for(model, classes=targets)
    print(f"shapes_cnn, {args.images} fresh images (targets = true class), sanity check on the first {args.sanity_images}\n")
    print("| method | pointing game | energy in mask | deletion AUC (lower better) | insertion AUC (higher better) | sanity checks passed |")
    print("|---|---|---|---|---|---|")
    for label, technique, overrides in METHODS:
        params = {**{p.name: p.default for p in technique.params}, **overrides}
        maps = technique.maps(model, images, objective, params)
        pointing = np.mean([localization.pointing_game(m, mask) for m, mask in zip(maps, data.masks)])
        energy = np.mean([localization.energy_in_mask(m, mask) for m, mask in zip(maps, data.masks)])
        curves = faithfulness.deletion_insertion(model, images, objective, maps, 16).metrics()
        passed = 0
        for index in range(args.sanity_images):
            check = sanity.cascading_randomization(
                technique, model, images[index : index + 1], objective.take([index]), params, maps[index : index + 1], 0, lambda: None
            )
            passed += check.passed
        print(
            f"| {label} | {pointing:.2f} | {energy:.3f} | {np.mean(curves['deletion_auc']):.3f} | "
            f"{np.mean(curves['insertion_auc']):.3f} | {passed}/{args.sanity_images} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
