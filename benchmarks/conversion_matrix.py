"""Convert torchvision classifiers (random weights) exported by both exporters; print parity and timings.

Run: ``python -m benchmarks.conversion_matrix [--models resnet18,mobilenet_v2] [--exporters torchscript,dynamo]``.
Each row: exporter, opset, worst relative error vs onnxruntime, batch handling, load seconds (fresh and cached).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
import warnings

import torch
import torchvision

from viz_server.errors import UserError
from viz_server.model import cache, pipeline

DEFAULT_MODELS = (
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "densenet121",
    "efficientnet_b0",
    "convnext_tiny",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "googlenet",
    "regnet_x_400mf",
    "mnasnet0_5",
    "vgg11",
)


def export(name: str, exporter: str) -> tuple[bytes, int]:
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    module = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    opset = 17 if exporter == "torchscript" else 20
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(1, 3, 224, 224),),
            buffer,
            input_names=["x"],
            output_names=["y"],
            opset_version=opset,
            dynamo=exporter == "dynamo",
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if exporter == "torchscript" else None,
        )
    return buffer.getvalue(), opset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--exporters", default="torchscript,dynamo")
    args = parser.parse_args()
    print("| model | exporter | opset | worst rel error | batch | first load s | cached load s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            for exporter in args.exporters.split(","):
                try:
                    data, opset = export(name, exporter)
                except Exception as exc:  # noqa: BLE001 - an exporter failure is a row, not a crash
                    print(f"| {name} | {exporter} | - | export failed: {type(exc).__name__} | | | |", flush=True)
                    continue
                started = time.perf_counter()
                try:
                    model = pipeline.load_model(data, cache_dir=folder)
                except UserError as exc:
                    print(f"| {name} | {exporter} | {opset} | refused: {exc} | | | |", flush=True)
                    continue
                first = time.perf_counter() - started
                cache.clear_memory()
                started = time.perf_counter()
                pipeline.load_model(data, cache_dir=folder)
                cached = time.perf_counter() - started
                batch = "any" if model.max_batch is None else f"{model.max_batch} at a time"
                print(f"| {name} | {exporter} | {opset} | {model.conversion.worst_rel_error:.1e} | {batch} | {first:.2f} | {cached:.2f} |", flush=True)


if __name__ == "__main__":
    main()
