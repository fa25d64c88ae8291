"""Forward-only sweeps: onnxruntime against the converted torch graph (``torch.inference_mode``), same batch,
same run. Corruption and shape-bias sweeps need the scores (``LoadedModel.predict``); embeddings need the
outputs of several layers (``LoadedModel.predict_layers`` against forward hooks on the torch graph).

Run: ``python -m benchmarks.sweeps [--models resnet18,mobilenet_v2] [--batch 64] [--size 224] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from viz_server.model.pipeline import load_model
from viz_server_plugins.toolkit.layers import default_layers, layer_outputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2,densenet121")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(software_line())
    print(f"batch {args.batch} at {args.size}x{args.size}, median of {args.repeats}\n")
    print("| model | torch scores s | onnxruntime scores s | speed-up | layers | torch layer outputs s | onnxruntime layer outputs s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        native = torchvision.models.get_model(name, weights=None).eval()
        model = load_model(export_native(native, args.size), use_cache=False)
        batch = torch.rand(args.batch, 3, args.size, args.size)
        array = batch.numpy()
        layers = default_layers(model, 4)

        def torch_scores():
            with torch.inference_mode():
                model.module(batch)

        times = {
            "torch": median_seconds(torch_scores, args.repeats),
            "ort": median_seconds(lambda: model.predict(array), args.repeats),
            "torch_layers": median_seconds(lambda: layer_outputs(model, batch, layers), args.repeats),
            "ort_layers": median_seconds(lambda: model.predict_layers(array, layers), args.repeats),
        }
        with torch.inference_mode():
            reference = layer_outputs(model, batch[:2], layers)
        ours = model.predict_layers(array[:2], layers)
        worst = max(float(np.abs(ours[layer] - reference[layer].numpy()).max() / (np.abs(reference[layer].numpy()).max() + 1e-12)) for layer in layers)
        assert worst < 1e-4, f"onnxruntime layer outputs differ from the torch graph's by {worst:.1e}"
        print(
            f"| {name} | {times['torch']:.3f} | {times['ort']:.3f} | {times['torch'] / times['ort']:.2f}x | {len(layers)} | "
            f"{times['torch_layers']:.3f} | {times['ort_layers']:.3f} | {times['torch_layers'] / times['ort_layers']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
