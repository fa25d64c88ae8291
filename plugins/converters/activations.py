"""Activations onnx2torch lacks or restricts: Gelu-20 (erf and tanh forms), Mish-18, Celu, Selu with any alpha
and gamma, Clip-11+ with absent or computed bounds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping


class Gelu(nn.Module, OnnxToTorchModule):
    def __init__(self, approximate: str):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Gelu(node.attributes.get("approximate", "none")), onnx_mapping=mapping(node))


class Mish(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


def convert_mish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Mish(), onnx_mapping=mapping(node))


class Selu(nn.Module, OnnxToTorchModule):
    def __init__(self, alpha: float, gamma: float):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.where(x > 0, x, self.alpha * torch.expm1(x))


def convert_selu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attrs = node.attributes
    module = Selu(float(attrs.get("alpha", 1.67326319217681884765625)), float(attrs.get("gamma", 1.05070102214813232421875)))
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node))


class Celu(nn.Module, OnnxToTorchModule):
    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.celu(x, self.alpha)


def convert_celu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Celu(float(node.attributes.get("alpha", 1.0))), onnx_mapping=mapping(node))


class ClampBy(nn.Module, OnnxToTorchModule):
    """Clip with bounds computed by the graph: ``clamp(x, min, max)`` with tensor bounds (either may be absent)."""

    def __init__(self, has_min: bool, has_max: bool):
        super().__init__()
        self.has_min, self.has_max = has_min, has_max

    def forward(self, x: torch.Tensor, *bounds: torch.Tensor) -> torch.Tensor:
        values = list(bounds)
        low = values.pop(0) if self.has_min else None
        high = values.pop(0) if self.has_max else None
        return torch.clamp(x, low, high)


def convert_clip(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Clip-11+: bounds are optional inputs, and an empty input name means absent (``F.normalize`` exports a
    Clip with a min and no max); constant bounds become a module as onnx2torch builds them, computed ones clamp."""
    from onnx2torch.node_converters.clip import _create_torch_module
    from onnx2torch.utils.common import OnnxMapping, get_const_value

    names = (list(node.input_values) + ["", ""])[1:3]
    try:
        low, high = (float(get_const_value(name, graph)) if name else None for name in names)
    except KeyError:
        present = [name for name in names if name]
        module = ClampBy(bool(names[0]), bool(names[1]))
        return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=(node.input_values[0], *present), outputs=node.output_values))
    return OperationConverterResult(torch_module=_create_torch_module(min_val=low, max_val=high), onnx_mapping=mapping(node))
