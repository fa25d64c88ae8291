"""The dataset suite (per-class accuracy, calibration, shortcut scan) on 100, 1,000 and 5,000 generated shapes
pictures with masks: seconds per technique and the process's peak memory, one process per size.

Run: ``python -m benchmarks.dataset_suite [--sizes 100,1000,5000]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

TECHNIQUES = ("class_accuracy", "calibration", "shortcut_scan")


def one(size: int) -> None:
    """Write ``size`` pictures with masks, run the suite on them through the runner, print one table row."""
    from viz_server import load_model
    from viz_server.image_sets import pair_masks, read_image_set
    from viz_server.runner import run_technique
    from viz_server_models import shapes, shipped_models

    with tempfile.TemporaryDirectory() as folder:
        shapes.write_image_set(folder, per_class=size // len(shapes.CLASSES), seed=7, masks=True)
        model = load_model(shipped_models()["shapes_cnn"])
        pictures = pair_masks(read_image_set(folder))
        images = [(name, data) for name, data, _, _ in pictures]
        labels = [label for _, _, label, _ in pictures]
        masks = [mask for _, _, _, mask in pictures]
        seconds = []
        for name in TECHNIQUES:
            started = time.perf_counter()
            run_technique(name, model, images, labels=labels, masks=masks)
            seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {len(images)} | " + " | ".join(f"{value:.1f}" for value in seconds) + f" | {sum(seconds):.1f} | {peak:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    print("| pictures | " + " | ".join(f"{name} (s)" for name in TECHNIQUES) + " | suite (s) | peak memory (MB) |")
    print("|---|" + "---|" * (len(TECHNIQUES) + 2))
    for size in (int(text) for text in args.sizes.split(",")):
        subprocess.run([sys.executable, "-m", "benchmarks.dataset_suite", "--one", str(size)], check=True)


if __name__ == "__main__":
    main()
