"""Quantized models as fake-quantized float graphs: QuantizeLinear, DequantizeLinear (per tensor, per axis,
blocked), DynamicQuantizeLinear, ConvInteger, MatMulInteger, QLinearConv and QLinearMatMul.

Forward values are the integers onnxruntime computes, carried in floating point: rounding half to even and
saturation as ONNX specifies, integer accumulation done in float64 (exact up to 2^53). The backward pass uses the
straight-through estimator for rounding (Bengio, Leonard & Courville 2013, "Estimating or Propagating Gradients
Through Stochastic Neurons"): inside the representable range the rounding passes the gradient unchanged, outside
it the saturation stops it. Gradients are therefore those of the float surrogate, not of the integer model
(which has none); the conversion report says so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn

from viz_server_plugins.converters.windows import Window, torch_pad_list

ONNX_RANGES = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767), 21: (0, 15), 22: (-8, 7)}
"""Saturation range of each integer type a quantized tensor may have, by ONNX element type (uint8, int8,
uint16, int16, uint4, int4)."""
CONVOLUTIONS = (F.conv1d, F.conv2d, F.conv3d)


def round_straight_through(x: torch.Tensor) -> torch.Tensor:
    """Round half to even (as ONNX) forward; the identity backward."""
    return x + (torch.round(x) - x).detach()


def along_axis(parameter: torch.Tensor, x: torch.Tensor, axis: int, block: int = 0) -> torch.Tensor:
    """A scale or zero point shaped to broadcast against ``x``: scalar, per ``axis``, or per block along it."""
    if parameter.dim() == 0 or parameter.numel() == 1 and block == 0:
        return parameter.reshape(())
    axis %= x.dim()
    if block:
        return parameter.repeat_interleave(block, dim=axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.dim()
    shape[axis] = -1
    return parameter.reshape(shape)


class QuantizeLinear(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int, block: int, low: int, high: int):
        super().__init__()
        self.axis, self.block, self.low, self.high = axis, block, low, high

    def forward(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None) -> torch.Tensor:
        scale = along_axis(scale.to(x.dtype), x, self.axis, self.block)
        shift = 0.0 if zero_point is None else along_axis(zero_point.to(x.dtype), x, self.axis, self.block)
        return torch.clamp(round_straight_through(x / scale) + shift, self.low, self.high)


class DequantizeLinear(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int, block: int):
        super().__init__()
        self.axis, self.block = axis, block

    def forward(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None) -> torch.Tensor:
        values = x.to(scale.dtype) if not x.is_floating_point() else x
        shift = 0.0 if zero_point is None else along_axis(zero_point.to(values.dtype), values, self.axis, self.block)
        return (values - shift) * along_axis(scale.to(values.dtype), values, self.axis, self.block)


class DynamicQuantizeLinear(nn.Module, OnnxToTorchModule):
    """uint8 quantization with a scale and zero point computed from the tensor's own range (held constant for
    the gradient)."""

    def forward(self, x: torch.Tensor):
        low = torch.clamp(x.detach().min(), max=0.0)
        high = torch.clamp(x.detach().max(), min=0.0)
        scale = (high - low) / 255.0
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero_point = torch.clamp(torch.round(-low / safe), 0, 255)
        quantized = torch.clamp(round_straight_through(x / safe) + zero_point, 0, 255)
        quantized = torch.where(scale == 0, zero_point.expand_as(quantized), quantized)
        return quantized, scale, zero_point


def _shifted(x: torch.Tensor, zero_point: torch.Tensor | None, axis: int | None = None) -> torch.Tensor:
    """``x - zero_point`` in float64, the zero point scalar or along ``axis`` of ``x``."""
    values = x.to(torch.float64)
    if zero_point is None:
        return values
    zero_point = zero_point.to(torch.float64)
    if zero_point.numel() == 1:
        return values - zero_point.reshape(())
    shape = [1] * values.dim()
    shape[axis if axis is not None else 0] = -1
    return values - zero_point.reshape(shape)


def integer_convolution(x: torch.Tensor, w: torch.Tensor, window: Window, groups: int) -> torch.Tensor:
    """The exact integer convolution of already zero-point-shifted float64 tensors (ONNX pads with the zero point,
    which is zero after the shift)."""
    plan = window.padding(tuple(x.shape[2:]))
    padded = F.pad(x, torch_pad_list([(begin, end) for begin, end, _ in plan]))
    return CONVOLUTIONS[window.rank - 1](padded, w, stride=window.strides, dilation=window.dilations, groups=groups)


class ConvInteger(nn.Module, OnnxToTorchModule):
    def __init__(self, window: Window, groups: int, present: tuple[str, ...]):
        super().__init__()
        self.window, self.groups, self.present = window, groups, present

    def forward(self, x: torch.Tensor, w: torch.Tensor, *zero_points: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.present, zero_points))
        out = integer_convolution(_shifted(x, given.get("x_zero_point"), 1), _shifted(w, given.get("w_zero_point"), 0), self.window, self.groups)
        return out.to(torch.float32 if not x.is_floating_point() else x.dtype)


class MatMulInteger(nn.Module, OnnxToTorchModule):
    def __init__(self, present: tuple[str, ...]):
        super().__init__()
        self.present = present

    def forward(self, a: torch.Tensor, b: torch.Tensor, *zero_points: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.present, zero_points))
        left = _shifted(a, given.get("a_zero_point"), a.dim() - 2 if given.get("a_zero_point") is not None and given["a_zero_point"].numel() > 1 else None)
        right = _shifted(b, given.get("b_zero_point"), b.dim() - 1 if given.get("b_zero_point") is not None and given["b_zero_point"].numel() > 1 else None)
        return torch.matmul(left, right).to(torch.float32 if not a.is_floating_point() else a.dtype)


class QLinearConv(nn.Module, OnnxToTorchModule):
    """Integer convolution, rescaled by ``x_scale * w_scale`` (per output channel allowed), requantized."""

    def __init__(self, window: Window, groups: int, low: int, high: int, has_bias: bool):
        super().__init__()
        self.window, self.groups, self.low, self.high, self.has_bias = window, groups, low, high, has_bias

    def forward(self, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias=None):
        accumulated = integer_convolution(_shifted(x, x_zero_point, 1), _shifted(w, w_zero_point, 0), self.window, self.groups)
        channel = (1, -1) + (1,) * (accumulated.dim() - 2)
        if bias is not None:
            accumulated = accumulated + bias.to(torch.float64).reshape(channel)
        real = accumulated * (x_scale.to(torch.float64) * w_scale.to(torch.float64).reshape(channel if w_scale.numel() > 1 else ()))
        out = real / y_scale.to(torch.float64) + y_zero_point.to(torch.float64)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.clamp(round_straight_through(out), self.low, self.high).to(dtype)


class QLinearMatMul(nn.Module, OnnxToTorchModule):
    def __init__(self, low: int, high: int):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
        left = _shifted(a, a_zero_point, a.dim() - 2 if a_zero_point.numel() > 1 else None)
        right = _shifted(b, b_zero_point, b.dim() - 1 if b_zero_point.numel() > 1 else None)
        a_scale = a_scale.to(torch.float64)
        b_scale = b_scale.to(torch.float64)
        real = torch.matmul(left, right) * (a_scale.reshape(-1, 1) if a_scale.numel() > 1 else a_scale.reshape(()))
        real = real * (b_scale.reshape(-1) if b_scale.numel() > 1 else b_scale.reshape(()))
        out = real / y_scale.to(torch.float64) + y_zero_point.to(torch.float64)
        dtype = a.dtype if a.is_floating_point() else torch.float32
        return torch.clamp(round_straight_through(out), self.low, self.high).to(dtype)


def _element_type(name: str, graph: OnnxGraph) -> int | None:
    """The ONNX element type of a tensor (an initializer's, or what shape inference recorded)."""
    if name in graph.initializers:
        return graph.initializers[name].proto.data_type
    info = graph.value_info.get(name) or next((value for value in graph.proto.input if value.name == name), None)
    return info.type.tensor_type.elem_type if info is not None and info.type.HasField("tensor_type") else None


def _integer_range(node: OnnxNode, graph: OnnxGraph, zero_point: str) -> tuple[int, int]:
    """The saturation range of a quantized result: the zero point's type, else ``output_dtype``, else uint8."""
    element = _element_type(zero_point, graph) if zero_point else node.attributes.get("output_dtype") or 2
    if element not in ONNX_RANGES:
        raise NotImplementedError(f"{node.operation_type} to ONNX element type {element} (float8 or 2-bit) is not supported")
    return ONNX_RANGES[element]


def convert_quantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    inputs = list(node.input_values) + ["", ""]
    low, high = _integer_range(node, graph, inputs[2])
    module = QuantizeLinear(int(node.attributes.get("axis", 1)), int(node.attributes.get("block_size", 0)), low, high)
    used = tuple(value for value in inputs[:3] if value)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values[:1]))


def convert_dequantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    inputs = list(node.input_values) + ["", ""]
    element = _element_type(inputs[0], graph)
    if element is not None and element not in ONNX_RANGES and element not in (6, 1, 10, 11):
        raise NotImplementedError(f"DequantizeLinear of ONNX element type {element} (float8 or 2-bit) is not supported")
    module = DequantizeLinear(int(node.attributes.get("axis", 1)), int(node.attributes.get("block_size", 0)))
    used = tuple(value for value in inputs[:3] if value)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values[:1]))


def convert_dynamic_quantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=DynamicQuantizeLinear(), onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


def convert_conv_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    weights = get_const_value(node.input_values[1], graph)
    names = ("x_zero_point", "w_zero_point")
    optional = (list(node.input_values[2:]) + ["", ""])[:2]
    present = tuple(name for name, value in zip(names, optional) if value)
    module = ConvInteger(Window.of(node, kernel=list(weights.shape[2:])), int(node.attributes.get("group", 1)), present)
    used = tuple(node.input_values[:2]) + tuple(value for value in optional if value)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values[:1]))


def convert_matmul_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    names = ("a_zero_point", "b_zero_point")
    optional = (list(node.input_values[2:]) + ["", ""])[:2]
    present = tuple(name for name, value in zip(names, optional) if value)
    used = tuple(node.input_values[:2]) + tuple(value for value in optional if value)
    return OperationConverterResult(torch_module=MatMulInteger(present), onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values[:1]))


def convert_qlinear_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    weights = get_const_value(node.input_values[3], graph)
    low, high = _integer_range(node, graph, node.input_values[7])
    has_bias = len(node.input_values) > 8 and bool(node.input_values[8])
    module = QLinearConv(Window.of(node, kernel=list(weights.shape[2:])), int(node.attributes.get("group", 1)), low, high, has_bias)
    used = tuple(node.input_values[: 9 if has_bias else 8])
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values[:1]))


def convert_qlinear_matmul(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    low, high = _integer_range(node, graph, node.input_values[7])
    return OperationConverterResult(
        torch_module=QLinearMatMul(low, high), onnx_mapping=OnnxMapping(inputs=tuple(node.input_values[:8]), outputs=node.output_values[:1])
    )
