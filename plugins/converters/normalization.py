"""Normalization layers: BatchNormalization at any input rank (onnx2torch needs a rank shape inference could
tell), LayerNormalization with its Mean and InvStdDev outputs, GroupNormalization-18 (per-group scale and bias)
and -21 (per channel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping


class GroupNorm(nn.Module, OnnxToTorchModule):
    """GroupNormalization; opset 18 has per-group scale/bias, opset 21 per-channel."""

    def __init__(self, groups: int, epsilon: float, per_channel: bool):
        super().__init__()
        self.groups, self.epsilon, self.per_channel = groups, epsilon, per_channel

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if not self.per_channel:
            scale = scale.repeat_interleave(channels // self.groups)
            bias = bias.repeat_interleave(channels // self.groups)
        return F.group_norm(x, self.groups, scale, bias, self.epsilon)


def _group_norm(node: OnnxNode, per_channel: bool) -> OperationConverterResult:
    module = GroupNorm(node.attributes["num_groups"], node.attributes.get("epsilon", 1e-5), per_channel)
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node, 3))


def convert_group_norm_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _group_norm(node, per_channel=False)


def convert_group_norm_21(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _group_norm(node, per_channel=True)


class BatchNorm(nn.Module, OnnxToTorchModule):
    """Inference-mode BatchNormalization over axis 1, for inputs of any rank (the rank is read at run time)."""

    def __init__(self, epsilon: float, outputs: int = 1):
        super().__init__()
        self.epsilon, self.outputs = epsilon, outputs

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        factor = scale / torch.sqrt(var + self.epsilon)
        y = x * factor.reshape(shape) + (bias - mean * factor).reshape(shape)
        return y if self.outputs == 1 else (y,) + (None,) * (self.outputs - 1)  # unnamed placeholders, by position


def convert_batch_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if node.attributes.get("training_mode", 0):
        raise NotImplementedError("BatchNormalization in training mode (batch statistics) is not an inference graph; export the model in eval mode")
    if node.attributes.get("spatial", 1) == 0:
        raise NotImplementedError("BatchNormalization with spatial=0 is not supported")
    return OperationConverterResult(
        torch_module=BatchNorm(float(node.attributes.get("epsilon", 1e-5)), len(node.output_values)),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:5], outputs=node.output_values),
    )


class LayerNorm(nn.Module, OnnxToTorchModule):
    """LayerNormalization over the axes from ``axis`` on; with ``statistics`` it also returns Mean and InvStdDev
    (shaped like the input with the normalized axes kept as 1), as ONNX defines them."""

    def __init__(self, axis: int, epsilon: float, statistics: int):
        super().__init__()
        self.axis, self.epsilon, self.statistics = axis, epsilon, statistics

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        axis = self.axis % x.dim()
        dims = tuple(range(axis, x.dim()))
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        inverse = torch.rsqrt((centred * centred).mean(dims, keepdim=True) + self.epsilon)
        y = centred * inverse * scale
        if bias is not None:
            y = y + bias
        if not self.statistics:
            return y
        return (y, mean, inverse)[: self.statistics + 1]


def convert_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    inputs = [name for name in node.input_values[:3] if name]
    module = LayerNorm(int(node.attributes.get("axis", -1)), float(node.attributes.get("epsilon", 1e-5)), len(node.output_values) - 1)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=tuple(inputs), outputs=node.output_values))
