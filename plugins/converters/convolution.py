"""Convolutions onnx2torch gets wrong or refuses: Conv with ``auto_pad`` SAME_UPPER/SAME_LOWER (TensorFlow and
Keras exports), and ConvTranspose in full (``output_shape``, ``auto_pad``, asymmetric ``pads``,
``output_padding``; onnx2torch ignores ``output_shape``).

Conv keeps onnx2torch's ``nn.ConvNd`` and puts a padding module in front that computes SAME padding from the
input's actual size. ConvTranspose runs the full transposed convolution and then crops (or extends) each axis to
ONNX's output, which covers every combination of its attributes with one rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx import helper
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn

from viz_server_plugins.converters.values import mapping
from viz_server_plugins.converters.windows import Window, torch_pad_list

TRANSPOSED = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


class SamePadding(nn.Module, OnnxToTorchModule):
    """Pads an input as ``auto_pad`` SAME_UPPER/SAME_LOWER asks, at the input's own size."""

    def __init__(self, window: Window):
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.window.padding(tuple(x.shape[2:]))
        return F.pad(x, torch_pad_list([(begin, end) for begin, end, _ in plan]))


def with_attributes(node: OnnxNode, **changes) -> OnnxNode:
    """A copy of a node with some attributes replaced (for handing a resolved node to onnx2torch)."""
    proto = helper.make_node(node.operation_type, list(node.input_values), list(node.output_values), name=node.name, domain=node.domain)
    kept = [attribute for attribute in node.proto.attribute if attribute.name not in changes]
    proto.attribute.extend(kept + [helper.make_attribute(name, value) for name, value in changes.items()])
    return OnnxNode(proto, node.unique_name)


def convert_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return get_converter("Conv", 11)(node, graph)
    weights = get_const_value(node.input_values[1], graph)
    window = Window.of(node, kernel=list(weights.shape[2:]))
    rank = window.rank
    converted = get_converter("Conv", 11)(with_attributes(node, auto_pad="NOTSET", pads=[0] * (2 * rank)), graph)
    module = nn.Sequential(SamePadding(window), converted.torch_module)
    return OperationConverterResult(torch_module=module, onnx_mapping=converted.onnx_mapping)


class ConvTranspose(nn.Module, OnnxToTorchModule):
    """ONNX ConvTranspose: the full transposed convolution, then each axis cropped by its begin padding and cut
    (or extended, for ``output_padding`` or a larger ``output_shape``) to ONNX's length, then the bias."""

    def __init__(self, weight, bias, strides, dilations, groups, pads, output_padding, output_shape, auto_pad):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.strides, self.dilations, self.groups = tuple(strides), tuple(dilations), groups
        self.pads, self.output_padding, self.output_shape, self.auto_pad = list(pads), list(output_padding), output_shape, auto_pad

    def _pads(self, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
        rank = len(spatial)
        if self.output_shape is None and not self.auto_pad.startswith("SAME"):
            return [(self.pads[axis], self.pads[rank + axis]) for axis in range(rank)]
        target = self.output_shape or [size * stride for size, stride in zip(spatial, self.strides)]
        result = []
        for axis, size in enumerate(spatial):
            extent = (self.weight.shape[2 + axis] - 1) * self.dilations[axis] + 1
            total = self.strides[axis] * (size - 1) + self.output_padding[axis] + extent - target[axis]
            small, large = total // 2, total - total // 2
            result.append((small, large) if self.auto_pad == "SAME_UPPER" else (large, small))
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() - 2
        full = TRANSPOSED[rank - 1](x, self.weight, None, self.strides, 0, 0, self.groups, self.dilations)
        pads = self._pads(tuple(x.shape[2:]))
        y = F.pad(full, torch_pad_list([(-begin, extra - end) for (begin, end), extra in zip(pads, self.output_padding)]))
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, *([1] * rank))
        return y


def convert_conv_transpose(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attrs = node.attributes
    weight = get_const_value(node.input_values[1], graph)
    bias = get_const_value(node.input_values[2], graph) if len(node.input_values) > 2 and node.input_values[2] else None
    rank = weight.dim() - 2
    if not 1 <= rank <= 3:
        raise NotImplementedError(f"ConvTranspose with {rank} spatial axes is not supported")
    output_shape = attrs.get("output_shape")
    if output_shape is not None:
        output_shape = list(output_shape)[-rank:]
    module = ConvTranspose(
        weight.float() if weight.is_floating_point() else weight,
        bias,
        strides=attrs.get("strides") or [1] * rank,
        dilations=attrs.get("dilations") or [1] * rank,
        groups=int(attrs.get("group", 1)),
        pads=attrs.get("pads") or [0] * (2 * rank),
        output_padding=attrs.get("output_padding") or [0] * rank,
        output_shape=output_shape,
        auto_pad=attrs.get("auto_pad", "NOTSET") or "NOTSET",
    )
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node))
