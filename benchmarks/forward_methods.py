"""Integrated Gradients, occlusion and RISE against Captum, as ratios from one run (median of ``--repeats``
timings after a warm-up), on torchvision networks with random weights at ``--size``² and batch ``--batch``.

- Integrated Gradients: ours on the converted graph against ``captum.attr.IntegratedGradients`` on the native
  module (same steps, Gauss-Legendre, same points per backward pass).
- Occlusion: ours on onnxruntime against ``captum.attr.Occlusion`` on the native module (same patch, stride and
  altered copies per forward pass); also images per second.
- RISE: ours on onnxruntime (Captum has none): images per second.

Run: ``python -m benchmarks.forward_methods [--models resnet18,mobilenet_v2] [--size 224] [--batch 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from viz_server.model.pipeline import load_model
from viz_server.techniques import validate_params
from viz_server.testing import objective_for
from viz_server_plugins.integrated_gradients import IntegratedGradients
from viz_server_plugins.occlusion import Occlusion
from viz_server_plugins.rise import Rise

STEPS, WINDOW, STRIDE, MASKS, PER_PASS = 32, 0.125, 0.5, 500, 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from captum.attr import IntegratedGradients as CaptumIntegratedGradients
    from captum.attr import Occlusion as CaptumOcclusion

    warnings.filterwarnings("ignore")
    print(software_line("captum"))
    print()
    print("| network | method | ours (s) | Captum (s) | ours / Captum | ours, images/s |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        native = getattr(torchvision.models, name)(weights=None).eval()
        model = load_model(export_native(native, args.size), name=name)
        images = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
        with torch.no_grad():
            targets = native(images).argmax(1)
        side = round(WINDOW * args.size)
        step = round(side * STRIDE)

        ig = validate_params(IntegratedGradients.params, {"steps": STEPS, "baseline": "zero", "internal_batch": PER_PASS})
        ours = median_seconds(lambda: IntegratedGradients().attribute(model, images, objective_for(model, classes=targets), ig), args.repeats)
        theirs = median_seconds(
            lambda: CaptumIntegratedGradients(native).attribute(
                images, baselines=torch.zeros_like(images), target=targets, n_steps=STEPS, internal_batch_size=PER_PASS
            ),
            args.repeats,
        )
        print(f"| {name} | Integrated Gradients ({STEPS} steps) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | {args.batch / ours:.2f} |", flush=True)

        occlusion = validate_params(Occlusion.params, {"window": WINDOW, "stride": STRIDE, "baseline": "zero", "batch": PER_PASS})
        ours = median_seconds(lambda: Occlusion().attribute(model, images, objective_for(model, classes=targets), occlusion), args.repeats)
        theirs = median_seconds(
            lambda: CaptumOcclusion(native).attribute(
                images, sliding_window_shapes=(3, side, side), strides=(3, step, step), baselines=0, target=targets, perturbations_per_eval=PER_PASS
            ),
            args.repeats,
        )
        print(
            f"| {name} | Occlusion ({side} px patch, stride {step}) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | {args.batch / ours:.2f} |", flush=True
        )

        rise = validate_params(Rise.params, {"masks": MASKS, "batch": PER_PASS})
        ours = median_seconds(lambda: Rise().attribute(model, images, objective_for(model, classes=targets), rise), args.repeats)
        print(f"| {name} | RISE ({MASKS} masks) | {ours:.2f} | — | — | {args.batch / ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
