"""Selection along an axis, with ONNX's exact rules where torch's differ: TopK (ties keep the lower index first),
CumSum (``exclusive`` and ``reverse``), GatherElements (negative indices count from the end)."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping


class TopK(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int, largest: bool):
        super().__init__()
        self.axis, self.largest = axis, largest

    def forward(self, x: torch.Tensor, k: torch.Tensor):
        count = int(k.reshape(-1)[0])
        values, indices = torch.sort(x, dim=self.axis, descending=self.largest, stable=True)
        return values.narrow(self.axis, 0, count), indices.narrow(self.axis, 0, count)


class CumSum(nn.Module, OnnxToTorchModule):
    def __init__(self, exclusive: bool, reverse: bool):
        super().__init__()
        self.exclusive, self.reverse = exclusive, reverse

    def forward(self, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        dim = int(axis.reshape(-1)[0]) % x.dim()
        if self.reverse:
            x = x.flip(dim)
        total = x.cumsum(dim)
        if self.exclusive:
            total = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), total.narrow(dim, 0, x.shape[dim] - 1)], dim=dim)
        return total.flip(dim) if self.reverse else total


class GatherElements(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        dim = self.axis % x.dim()
        indices = indices.long()
        return torch.gather(x, dim, torch.where(indices < 0, indices + x.shape[dim], indices))


def convert_top_k(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = TopK(int(node.attributes.get("axis", -1)), bool(node.attributes.get("largest", 1)))
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node, 2))


def convert_cum_sum(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = CumSum(bool(node.attributes.get("exclusive", 0)), bool(node.attributes.get("reverse", 0)))
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node, 2))


def convert_gather_elements(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GatherElements(int(node.attributes.get("axis", 0))), onnx_mapping=mapping(node, 2))
