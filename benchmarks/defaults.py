"""What a user waits for: every class attribution with its **default parameters** (sanity check, faithfulness
curves and pictures on, as every user gets them) over one bare forward+backward of the converted graph on the
same images, with where the time goes (cProfile of one run, grouped by stage).

Run: ``python -m benchmarks.defaults [--models resnet18,mobilenet_v2] [--batches 8,32] [--size 224] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import warnings

import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from benchmarks.gradients import forward_backward, shape_pictures
from viz_server.model.images import decode_image
from viz_server.model.pipeline import load_model
from viz_server.runner import run_technique

TECHNIQUES = ("saliency", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam")
STAGES = {
    "sanity check": "sanity.py",
    "deletion/insertion": "faithfulness.py",
    "localization": "localization.py",
    "pictures": "rendering.py",
}


def stage_seconds(work) -> dict[str, float]:
    """Cumulative seconds of each stage in one profiled call of ``work`` (by the module its top function lives in)."""
    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(entry[3] for entry in stats.stats.values())
    found = {"total": total}
    for stage, module in STAGES.items():
        found[stage] = max((entry[3] for (file, _line, _name), entry in stats.stats.items() if file.endswith(module)), default=0.0)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(software_line())
    print(f"{args.size}x{args.size}, median of {args.repeats} after a warm-up; defaults = every parameter at its default\n")
    rows, profiles = [], []
    for name in args.models.split(","):
        native = torchvision.models.get_model(name, weights=None).eval()
        model = load_model(export_native(native, args.size), use_cache=False)
        for count in (int(b) for b in args.batches.split(",")):
            pictures = shape_pictures(count, args.size)
            batch = torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data in pictures]))
            bare = median_seconds(forward_backward(model.module, batch), max(7, args.repeats))  # short and noisy: more repeats
            cells = []
            for technique in TECHNIQUES:
                seconds = median_seconds(lambda technique=technique: run_technique(technique, model, pictures), args.repeats)
                cells.append(f"{seconds / bare:.1f}")
                if technique == "saliency":
                    parts = stage_seconds(lambda: run_technique("saliency", model, pictures))
                    share = {stage: parts[stage] / parts["total"] for stage in STAGES}
                    profiles.append(f"| {name} | {count} | {parts['total']:.2f} | " + " | ".join(f"{share[s]:.0%}" for s in STAGES) + " |")
            rows.append(f"| {name} | {count} | {bare:.3f} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    print("\nwhole run with defaults / one bare forward+backward of the converted graph (same images)\n")
    print("| model | images | bare fwd+bwd s | " + " | ".join(TECHNIQUES) + " |")
    print("|---|---|---|" + "---|" * len(TECHNIQUES))
    print("\n".join(rows))
    print("\nwhere saliency's time goes (one profiled run; shares of the total)\n")
    print("| model | images | total s | " + " | ".join(STAGES) + " |")
    print("|---|---|---|" + "---|" * len(STAGES))
    print("\n".join(profiles))


if __name__ == "__main__":
    main()
