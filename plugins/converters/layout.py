"""Layout ops onnx2torch refuses or gets wrong: DepthToSpace in both modes (DCR, TensorFlow's default, and CRD),
SpaceToDepth, and Flatten at any axis (0 and negative axes included)."""

from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping


class DepthToSpace(nn.Module, OnnxToTorchModule):
    def __init__(self, block: int, mode: str):
        super().__init__()
        self.block, self.mode = block, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = self.block
        if self.mode == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (b * b), h * b, w * b)


class SpaceToDepth(nn.Module, OnnxToTorchModule):
    def __init__(self, block: int, mode: str):
        super().__init__()
        self.block, self.mode = block, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = self.block
        blocks = x.reshape(n, c, h // b, b, w // b, b)
        y = blocks.permute(0, 3, 5, 1, 2, 4) if self.mode == "DCR" else blocks.permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)


class Flatten(nn.Module, OnnxToTorchModule):
    """ONNX Flatten: a 2-D result whose first axis is the product of the axes before ``axis``."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.dim() if self.axis < 0 else self.axis
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def convert_depth_to_space(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise NotImplementedError(f"DepthToSpace mode {mode!r} is not supported")
    return OperationConverterResult(torch_module=DepthToSpace(int(node.attributes["blocksize"]), mode), onnx_mapping=mapping(node))


def convert_space_to_depth(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise NotImplementedError(f"SpaceToDepth mode {mode!r} is not supported")
    return OperationConverterResult(torch_module=SpaceToDepth(int(node.attributes["blocksize"]), mode), onnx_mapping=mapping(node))


def convert_flatten(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Flatten(int(node.attributes.get("axis", 1))), onnx_mapping=mapping(node))
