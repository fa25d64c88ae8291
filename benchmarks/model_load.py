"""Model load: the first load (guard, normalize, convert, verify, write the cache) and a load from the disk
cache in a process that has not seen the model (the memory cache emptied), for ResNet-18 and ResNet-50
(a 100 MB ONNX file). Random weights.

Run: ``python -m benchmarks.model_load [--models resnet18,resnet50] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torchvision

from benchmarks.common import export_native, software_line
from viz_server.model import cache, pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(software_line())
    print(f"median of {args.repeats}\n")
    print("| model | ONNX MB | first load s | guard / normalize / convert / verify s | cached load s |\n|---|---|---|---|---|")
    for name in args.models.split(","):
        data = export_native(torchvision.models.get_model(name, weights=None).eval(), 224)
        first, cached, stages = [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                cache.clear_memory()
                started = time.perf_counter()
                model = pipeline.load_model(data, cache_dir=folder)
                first.append(time.perf_counter() - started)
                stages.append(model.conversion.seconds)
                cache.clear_memory()
                started = time.perf_counter()
                again = pipeline.load_model(data, cache_dir=folder)
                cached.append(time.perf_counter() - started)
                assert again.conversion.from_cache
        stage = " / ".join(f"{statistics.median(s.get(key, 0.0) for s in stages):.2f}" for key in ("guard", "normalize", "convert", "verify"))
        print(f"| {name} | {len(data) / 2**20:.0f} | {statistics.median(first):.2f} | {stage} | {statistics.median(cached):.2f} |", flush=True)


if __name__ == "__main__":
    main()
