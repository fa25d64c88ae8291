"""Activations newer than onnx2torch: Gelu-20 (erf and tanh forms) and Mish-18."""

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
