"""The tests' own model zoo: small torch modules shaped like real exports, exported with both exporters.

Each network is tiny (random weights, 32x32 inputs) but has the structure that breaks converters in
practice: residual adds, depthwise convs with ReLU6/HardSwish, inception-style concat branches, GELU with
LayerNorm, a Softmax head, an NHWC input in [0, 255] (tf2onnx/Keras style), a fixed-batch reshape, reflect
padding with resizing and splits. ``paddle_style`` moves every weight into Constant nodes, as PaddlePaddle
exports do.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
import zlib
from functools import cache

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

SIZE = 32


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.Hardswish(),
            nn.Conv2d(8, 16, 1),
            nn.ReLU6(),
        )
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LeakyReLU(0.1), nn.Conv2d(4, 4, 3, padding=1))
        self.c = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(3, 4, 1))
        self.head = nn.Linear(12, 6)

    def forward(self, x):
        y = torch.relu(torch.cat([self.a(x), self.b(x), self.c(x)], 1))
        y = F.avg_pool2d(y, 2)
        return self.head(y.amax((2, 3)))


class GeluLayerNorm(nn.Module):
    """A ConvNeXt-like block: patchify conv, LayerNorm over channels, GELU, global mean."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.patch(x).permute(0, 2, 3, 1)
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean((1, 2)))


class SoftmaxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return torch.softmax(self.head(torch.relu(self.conv(x)).mean((2, 3))), dim=1)


class NHWCKeras(nn.Module):
    """Keras-style: N x H x W x C input in [0, 255], scaled inside the graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = (x / 127.5 - 1.0).permute(0, 3, 1, 2)
        return torch.softmax(self.head(torch.relu(self.conv(x)).mean((2, 3))), dim=-1)


class FixedBatchFlatten(nn.Module):
    """Flattens with a hard-coded batch of 1, as many hand-written exports do."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * (SIZE // 2) ** 2, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).reshape(1, -1))


class FlattenAll(nn.Module):
    """Flattens the whole batch into one vector: no rewrite can give it a batch axis, so it runs per image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * (SIZE // 2) ** 2, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).reshape(-1)[None])


class PadResizeSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x = torch.relu(self.conv(x))
        x = F.interpolate(F.avg_pool2d(x, 4), scale_factor=2.0, mode="bilinear", align_corners=False)
        first, second = torch.split(x, 4, dim=1)
        return self.head((first * torch.sigmoid(second)).mean((2, 3)))


class HandHardSwish(nn.Module):
    """MobileNetV3-style: ReLU, then a hard-swish and a squeeze-excite hard-sigmoid written out with relu6
    (``x * relu6(x + 3) / 6``), which exports as Add -> Clip(0, 6) -> Mul -> Div, as PaddlePaddle exports do."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.squeeze, self.excite = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.project = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.depthwise(self.stem(x))
        x = x * F.relu6(x + 3.0) / 6.0
        scale = F.relu6(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))) + 3.0) / 6.0
        x = torch.relu(self.project(x * scale))
        return self.head(x.mean((2, 3)))


ZOO = {
    "residual": Residual,
    "depthwise": Depthwise,
    "inception": Inception,
    "gelu_layernorm": GeluLayerNorm,
    "softmax_head": SoftmaxHead,
    "nhwc_keras": NHWCKeras,
    "fixed_batch": FixedBatchFlatten,
    "flatten_all": FlattenAll,
    "pad_resize_split": PadResizeSplit,
    "hand_hard_swish": HandHardSwish,
}
EXPORTS = (("torchscript", 13), ("torchscript", 17), ("dynamo", 18), ("dynamo", 20))


def example_input(name: str) -> torch.Tensor:
    if name == "nhwc_keras":
        return torch.rand(1, SIZE, SIZE, 3) * 255.0
    return torch.rand(1, 3, SIZE, SIZE)


@cache
def build(name: str) -> nn.Module:
    torch.manual_seed(zlib.crc32(name.encode()))
    module = ZOO[name]().eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    return module


@cache
def export(name: str, exporter: str, opset: int) -> bytes:
    """ONNX bytes of zoo model ``name``; the batch axis is dynamic except for ``fixed_batch`` and dynamo."""
    module, example = build(name), example_input(name)
    buffer = io.BytesIO()
    dynamic = None if name in ("fixed_batch", "flatten_all") or exporter == "dynamo" else {"x": {0: "batch"}, "y": {0: "batch"}}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["y"],
            opset_version=opset,
            dynamic_axes=dynamic,
            dynamo=exporter == "dynamo",
        )
    return buffer.getvalue()


def paddle_style(data: bytes) -> bytes:
    """Move every initializer into a Constant node feeding an Identity, as PaddlePaddle exports look."""
    model = onnx.load_from_string(data)
    nodes = []
    for tensor in model.graph.initializer:
        constant_name = tensor.name + "__const"
        nodes.append(helper.make_node("Constant", [], [constant_name], value=numpy_helper.from_array(numpy_helper.to_array(tensor), constant_name)))
        nodes.append(helper.make_node("Identity", [constant_name], [tensor.name]))
    del model.graph.initializer[:]
    initializer_inputs = [value for value in model.graph.input if value.name in {n.output[0] for n in nodes}]
    for value in initializer_inputs:
        model.graph.input.remove(value)
    old = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + old)
    return model.SerializeToString()


def tiny_model(op: str = "Relu", output_units: int = 3, metadata: dict | None = None, head_weight=None) -> bytes:
    """Conv -> ``op`` -> global pool -> Gemm on a 3 x 8 x 8 image, built node by node (any batch size).

    ``head_weight`` replaces the Gemm's random weight (zeros make a model whose scores ignore the input)."""
    import numpy as np

    rng = np.random.default_rng(0)
    head = rng.normal(0, 0.5, (output_units, 4)) if head_weight is None else head_weight
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.asarray(head, np.float32), "fc_w"),
        numpy_helper.from_array(np.linspace(0.1, 0.3, output_units).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(op, ["conv"], ["act"], name="act", **({"alpha": 0.1} if op == "ThresholdedRelu" else {})),
        helper.make_node("GlobalAveragePool", ["act"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["scores"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["batch", output_units])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()
