"""Resampling and pooling: Resize-18/19 and AveragePool-19 with their new attributes at the defaults (they reuse
onnx2torch's older converters), GlobalMaxPool."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping


def convert_resize_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attrs = node.attributes
    if attrs.get("antialias", 0) or attrs.get("axes") or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotImplementedError("Resize with antialias, axes or keep_aspect_ratio_policy is not supported")
    if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric":
        raise NotImplementedError("Resize with half_pixel_symmetric coordinates is not supported")
    return get_converter("Resize", 13)(node, graph)


def convert_average_pool_19(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if any(d != 1 for d in node.attributes.get("dilations", [])):
        raise NotImplementedError("AveragePool with dilations is not supported")
    return get_converter("AveragePool", 11)(node, graph)


class GlobalMaxPool(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=mapping(node))
