"""What every benchmark shares: exporting a native module, timing a piece of work, naming the machine."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import platform
import statistics
import time
import warnings

import torch


def export_native(module: torch.nn.Module, size: int, opset: int = 17) -> bytes:
    """ONNX bytes of ``module`` (TorchScript exporter, dynamic batch axis) taking 3 x size x size images."""
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(1, 3, size, size),),
            buffer,
            input_names=["x"],
            output_names=["y"],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return buffer.getvalue()


def median_seconds(work, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``work()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def software_line(*extra: str) -> str:
    """One line naming the machine and the versions a table was measured with."""
    packages = ("torch", "onnxruntime", "onnx2torch", *extra)
    versions = ", ".join(f"{name} {version(name)}" for name in packages)
    return f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, Python {platform.python_version()}; {versions}"
