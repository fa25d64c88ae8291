"""GroupNormalization-18 (per-group scale and bias) and -21 (per channel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
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
