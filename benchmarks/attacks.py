"""PGD-10 under L-inf (eps 8/255, step 2/255, random start), batch 16 at 224²: our ``attacks.pgd`` on the
converted graph against torchattacks' ``PGD`` on the native module, same run.

torchattacks pins ``requests~=2.25.1``, which would downgrade a machine's requests, so it is not in the
``bench`` extra; install it without its dependencies (it imports none of them):
``pip install --no-deps torchattacks``.

Run: ``python -m benchmarks.attacks [--models resnet18,mobilenet_v2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from viz_server.model.pipeline import load_model
from viz_server_plugins.toolkit.attacks import pgd, unit_forward

EPSILON, STEP, STEPS = 8 / 255, 2 / 255, 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    try:
        import torchattacks
    except ImportError:
        raise SystemExit("torchattacks is not installed; install it with: python3 -m pip install --no-deps torchattacks") from None

    print(software_line("torchattacks"))
    print(f"PGD-{STEPS} L-inf, batch {args.batch} at 224x224, median of {args.repeats}\n")
    print("| model | ours s | torchattacks s | ratio | ours: accuracy under attack | torchattacks: accuracy under attack |\n|---|---|---|---|---|---|")
    for name in args.models.split(","):
        native = torchvision.models.get_model(name, weights=None).eval()
        for parameter in native.parameters():
            parameter.requires_grad_(False)
        model = load_model(export_native(native, 224), use_cache=False)
        images = torch.rand(args.batch, 3, 224, 224)
        with torch.no_grad():
            labels = native(images).argmax(1)
        unit = images.permute(0, 2, 3, 1).contiguous()  # our attacks work in unit space, N x H x W x C
        forward = unit_forward(model)
        reference = torchattacks.PGD(native, eps=EPSILON, alpha=STEP, steps=STEPS, random_start=True)
        generator = torch.Generator().manual_seed(0)
        ours_time = median_seconds(lambda: pgd(forward, unit, labels, EPSILON, STEP, STEPS, "Linf", random_start=True, generator=generator), args.repeats)
        reference_time = median_seconds(lambda: reference(images, labels), args.repeats)
        ours_adversarial = pgd(forward, unit, labels, EPSILON, STEP, STEPS, "Linf", random_start=True, generator=generator).permute(0, 3, 1, 2)
        reference_adversarial = reference(images, labels)
        with torch.no_grad():
            ours_accuracy = (native(ours_adversarial).argmax(1) == labels).float().mean()
            reference_accuracy = (native(reference_adversarial).argmax(1) == labels).float().mean()
        print(
            f"| {name} | {ours_time:.2f} | {reference_time:.2f} | {ours_time / reference_time:.2f} | {ours_accuracy:.2f} | {reference_accuracy:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
