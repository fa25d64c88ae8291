"""Export a trained torch module to ONNX with its spec (labels, range, normalization) in metadata_props."""

from __future__ import annotations

import io
import json
from pathlib import Path

import onnx
import torch


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict, opset: int = 17) -> None:
    """TorchScript exporter, dynamic batch axis, spec fields as JSON values in ``metadata_props``."""
    buffer = io.BytesIO()
    module.eval()
    torch.onnx.export(
        module,
        (example,),
        buffer,
        input_names=["image"],
        output_names=["scores"],
        dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    if example.shape[1] == 3:
        metadata = {"channel_order": "RGB", **metadata}  # every spec field that changes the input is stated, none guessed
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
