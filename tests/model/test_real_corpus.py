"""Models made elsewhere: timm and torchvision architectures exported here with both exporters at several
opsets (random weights; heads that start at zero re-initialized so gradients exist), a segmenter, an embedding
model ending in ``F.normalize``, and float16, QDQ INT8 and dynamically quantized variants. Every one converts
with parity at its own tolerance and a usable input gradient. ``pytest -s`` prints the table."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from viz_server import load_model

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow


class Normalized(torch.nn.Module):
    """An embedding model: the backbone's pooled features, L2-normalized."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return F.normalize(self.inner(x), dim=1)


class SegmentationOut(torch.nn.Module):
    """torchvision segmenters return a dict; exports keep its "out" map."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)["out"]


def reinitialize_zero_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Weights that start at zero (timm zero-initializes some heads and residual branches) get small random values."""
    for submodule in module.modules():
        weight = getattr(submodule, "weight", None)
        if isinstance(weight, torch.nn.Parameter) and weight.dim() >= 1 and float(weight.detach().abs().max()) == 0:
            torch.nn.init.normal_(weight, 0, 0.02)
    return module


def build(name: str):
    torch.manual_seed(0)
    if name == "lraspp_mobilenet_v3_large":
        return SegmentationOut(torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)), (1, 3, 224, 224)
    if name == "deeplabv3_mobilenet_v3_large":
        inner = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5, aux_loss=False)
        return SegmentationOut(inner), (1, 3, 224, 224)
    if name.startswith("embedding:"):
        return Normalized(reinitialize_zero_weights(timm.create_model(name.split(":")[1], pretrained=False, num_classes=0))), (1, 3, 224, 224)
    model = timm.create_model(name, pretrained=False)
    return reinitialize_zero_weights(model), (1, *model.pretrained_cfg.get("input_size", (3, 224, 224)))


def export(name: str, exporter: str, opset: int) -> bytes:
    module, shape = build(name)
    module.eval()
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(module, (torch.rand(*shape),), buffer, dynamo=True, opset_version=opset, input_names=["x"], output_names=["y"])
        else:
            axes = {"x": {0: "batch"}, "y": {0: "batch"}}
            torch.onnx.export(
                module, (torch.rand(*shape),), buffer, dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"], dynamic_axes=axes
            )
    return buffer.getvalue()


def float16(data: bytes) -> bytes:
    from onnxconverter_common import float16 as converter

    return converter.convert_float_to_float16(onnx.load_from_string(data), keep_io_types=False).SerializeToString()


def quantized(data: bytes, tmp_path, *, dynamic: bool = False, per_channel: bool = True) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    source, target = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    source.write_bytes(data)
    if dynamic:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Gemm", "Conv"])
        return target.read_bytes()
    model = onnx.load_from_string(data)
    name, shape = model.graph.input[0].name, [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{name: rng.random(shape, dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8
    )
    return target.read_bytes()


# (model, exporter, opset, variant, task, relative tolerance)
CORPUS = [
    ("resnet18", "torchscript", 13, "float32", "classification", 1e-4),
    ("resnet18", "dynamo", 18, "float32", "classification", 1e-4),
    ("efficientnet_b0", "torchscript", 17, "float32", "classification", 1e-4),
    ("mobilenetv3_small_100", "torchscript", 11, "float32", "classification", 1e-4),
    ("convnext_atto", "dynamo", 20, "float32", "classification", 1e-4),
    ("vit_tiny_patch16_224", "torchscript", 17, "float32", "classification", 1e-4),
    ("vit_tiny_patch16_224", "dynamo", 18, "float32", "classification", 1e-4),
    ("swin_tiny_patch4_window7_224", "torchscript", 17, "float32", "classification", 1e-4),
    ("mobilevit_xxs", "torchscript", 17, "float32", "classification", 1e-4),
    ("levit_128s", "torchscript", 17, "float32", "classification", 1e-4),
    ("regnetx_002", "dynamo", 18, "float32", "classification", 1e-4),
    ("lraspp_mobilenet_v3_large", "torchscript", 17, "float32", "dense", 1e-4),
    ("deeplabv3_mobilenet_v3_large", "dynamo", 18, "float32", "dense", 1e-4),
    ("embedding:resnet18", "dynamo", 18, "float32", "embedding", 1e-4),
    ("embedding:mobilenetv3_small_100", "torchscript", 17, "float32", "embedding", 1e-4),
    ("mobilenetv3_small_100", "torchscript", 17, "float16", "classification", 2e-2),
    ("resnet18", "torchscript", 17, "float16", "classification", 2e-2),
    ("resnet18", "torchscript", 17, "QDQ int8 per channel", "classification", 5e-2),
    ("mobilenetv3_small_100", "torchscript", 17, "QDQ int8 per tensor", "classification", 5e-2),
    ("vit_tiny_patch16_224", "torchscript", 17, "dynamic int8", "classification", 5e-2),
]
ROWS: list[str] = []


@pytest.mark.parametrize("name,exporter,opset,variant,task,tolerance", CORPUS, ids=[f"{n}-{e}{o}-{v.replace(' ', '_')}" for n, e, o, v, _, _ in CORPUS])
def test_models_made_elsewhere_convert_with_parity(name, exporter, opset, variant, task, tolerance, tmp_path):
    data = export(name, exporter, opset)
    if variant == "float16":
        data = float16(data)
    elif variant.startswith("QDQ"):
        data = quantized(data, tmp_path, per_channel="channel" in variant)
    elif variant == "dynamic int8":
        data = quantized(data, tmp_path, dynamic=True)
    model = load_model(data, use_cache=False)
    conversion = model.conversion
    precision = next((caveat for caveat in conversion.caveats if "float16" in caveat or "Quantized" in caveat), "")
    ROWS.append(
        f"| {name} | {exporter} {opset} | {variant} | {model.spec.task} | {conversion.worst_rel_error:.1e} | {conversion.gradient_norm:.3g} | {precision[:90]} |"
    )
    print(ROWS[-1])
    assert model.spec.task == task
    assert conversion.worst_rel_error <= tolerance, conversion.parity
    assert np.isfinite(conversion.gradient_norm) and conversion.gradient_norm > 0
    if variant != "float32":
        assert precision, conversion.caveats


def test_a_variable_size_segmenter_is_verified_at_each_size_it_is_used_at(tmp_path):
    module, _ = build("lraspp_mobilenet_v3_large")
    buffer = io.BytesIO()
    axes = {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (torch.rand(1, 3, 224, 224),), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes=axes
        )
    for count, size in enumerate(["224,224", "160,288", "97,131"], start=1):
        model = load_model(buffer.getvalue(), cache_dir=tmp_path, image_size=size)
        assert len(model.conversion.verified) == count  # the new size was verified (Resize to computed sizes included)
        assert all(check["max_rel_error"] < 1e-4 for checks in model.conversion.verified.values() for check in checks)
