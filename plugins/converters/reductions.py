"""Reductions with the axes as an input (ReduceSum-13, every Reduce*-18 and later)."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import const_list, mapping

REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)


class Reduce(nn.Module, OnnxToTorchModule):
    """ONNX Reduce* with static axes (None = all axes)."""

    def __init__(self, op: str, axes: list[int] | None, keepdims: bool):
        super().__init__()
        self.op, self.axes, self.keepdims = op, axes, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(x.dim())) if self.axes is None else tuple(a % x.dim() for a in self.axes)
        keep = self.keepdims
        if self.op == "ReduceMean":
            return x.mean(dims, keepdim=keep)
        if self.op == "ReduceSum":
            return x.sum(dims, keepdim=keep)
        if self.op == "ReduceMax":
            return x.amax(dims, keepdim=keep)
        if self.op == "ReduceMin":
            return x.amin(dims, keepdim=keep)
        if self.op == "ReduceSumSquare":
            return (x * x).sum(dims, keepdim=keep)
        if self.op == "ReduceL1":
            return x.abs().sum(dims, keepdim=keep)
        if self.op == "ReduceL2":
            return (x * x).sum(dims, keepdim=keep).sqrt()
        if self.op == "ReduceLogSum":
            return x.sum(dims, keepdim=keep).log()
        if self.op == "ReduceLogSumExp":
            return torch.logsumexp(x, dims, keepdim=keep)
        result = x  # ReduceProd: one axis at a time, highest first so indices stay valid
        for dim in sorted(dims, reverse=True):
            result = result.prod(dim, keepdim=keep)
        return result


class Passthrough(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def convert_reduce_axes_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    keepdims = bool(node.attributes.get("keepdims", 1))
    axes = const_list(node.input_values[1], graph, "axes", node) if len(node.input_values) > 1 else None
    if "axes" in node.attributes:  # an old-style attribute on a model that mislabels its opset
        axes = list(node.attributes["axes"])
    if not axes:
        if node.attributes.get("noop_with_empty_axes", 0):
            return OperationConverterResult(torch_module=Passthrough(), onnx_mapping=mapping(node))
        axes = None
    return OperationConverterResult(torch_module=Reduce(node.operation_type, axes, keepdims), onnx_mapping=mapping(node))
