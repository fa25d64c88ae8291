"""Torch modules for the nodes ``normalize`` fuses into its own domain (``FUSED_DOMAIN``): one ``F.gelu``,
``F.silu`` or ``F.linear`` each, so the backward pass runs one kernel instead of the exporter's several.

They belong to the core because the core writes those nodes; ``convert`` looks them up before any plugin's
converters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn


def _mapping(node: OnnxNode) -> OnnxMapping:
    return OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values)


class Gelu(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)


def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Gelu(), onnx_mapping=_mapping(node))


class Silu(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


def convert_silu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Silu(), onnx_mapping=_mapping(node))


class FusedLinear(nn.Module, OnnxToTorchModule):
    """``normalize.fuse_linear``'s MatMul + bias as one ``F.linear``, the weight stored out x in (contiguous)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.t().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def convert_fused_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    weight, bias = (get_const_value(name, graph) for name in node.input_values[1:3])
    return OperationConverterResult(torch_module=FusedLinear(weight, bias), onnx_mapping=_mapping(node))
