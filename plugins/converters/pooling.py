"""Pooling with ONNX's full window semantics: MaxPool (with its Indices output and both storage orders),
AveragePool (dilations, count_include_pad), LpPool, GlobalMaxPool, for every version.

The input is padded first (``windows.Window`` resolves auto_pad, pads of any size and ceil_mode at the input's
actual size), then the window op runs without padding of its own, so no torch restriction on padding (at most
half the kernel, symmetric only) applies. Average and Lp pools sum over windows with a depthwise all-ones
convolution, which handles dilations; the average divides by the count of positions ONNX counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping
from viz_server_plugins.converters.windows import Window, torch_pad_list

MAX_POOLS = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
CONVOLUTIONS = (F.conv1d, F.conv2d, F.conv3d)


def _check_rank(window: Window, x: torch.Tensor) -> None:
    if not 1 <= window.rank <= 3 or x.dim() != window.rank + 2:
        raise ValueError(f"a {window.rank}-d pooling window needs an input of rank {window.rank + 2}, not {x.dim()}")


def _padded(x: torch.Tensor, plan, value: float) -> torch.Tensor:
    """``x`` padded as ``plan`` says (no copy when it says nothing)."""
    if not any(begin or end for begin, end, _ in plan):
        return x
    return F.pad(x, torch_pad_list([(begin, end) for begin, end, _ in plan]), value=value)


def window_sums(x: torch.Tensor, window: Window) -> torch.Tensor:
    """Sum over every window of an already padded N x C x spatial tensor (stride and dilation applied)."""
    batch, channels, *spatial = x.shape
    ones = torch.ones((1, 1, *window.kernel), dtype=x.dtype, device=x.device)
    summed = CONVOLUTIONS[window.rank - 1](x.reshape(batch * channels, 1, *spatial), ones, stride=window.strides, dilation=window.dilations)
    return summed.reshape(batch, channels, *summed.shape[2:])


class MaxPool(nn.Module, OnnxToTorchModule):
    """ONNX MaxPool; with ``indices`` it also returns ONNX's Indices (flat positions in the whole input tensor,
    row major, or column major over the spatial axes for ``storage_order`` 1)."""

    def __init__(self, window: Window, indices: bool = False, storage_order: int = 0):
        super().__init__()
        self.window, self.indices, self.storage_order = window, indices, storage_order

    def forward(self, x: torch.Tensor):
        _check_rank(self.window, x)
        spatial = tuple(x.shape[2:])
        plan = self.window.padding(spatial)
        padded = _padded(x, plan, float("-inf"))
        pool = MAX_POOLS[self.window.rank - 1]
        if not self.indices:
            return pool(padded, self.window.kernel, self.window.strides, 0, self.window.dilations)
        values, where = pool(padded, self.window.kernel, self.window.strides, 0, self.window.dilations, return_indices=True)
        coordinates = torch.unravel_index(where, tuple(padded.shape[2:]))
        coordinates = [c - begin for c, (begin, _, _) in zip(coordinates, plan)]
        order = range(len(spatial)) if self.storage_order == 0 else reversed(range(len(spatial)))
        flat = torch.zeros_like(where)
        for axis in order:
            flat = flat * spatial[axis] + coordinates[axis]
        planes = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(x.shape[0], x.shape[1], *([1] * len(spatial)))
        return values, flat + planes * math.prod(spatial)


class AveragePool(nn.Module, OnnxToTorchModule):
    """ONNX AveragePool: the window sum over the count of input positions it covers (plus the explicit padding
    with ``count_include_pad``; never the positions ceil_mode adds)."""

    def __init__(self, window: Window, count_include_pad: bool):
        super().__init__()
        self.window, self.count_include_pad = window, count_include_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank(self.window, x)
        spatial = tuple(x.shape[2:])
        plan = self.window.padding(spatial)
        sums = window_sums(_padded(x, plan, 0.0), self.window)
        counted = torch.ones((1, 1, *spatial), dtype=x.dtype, device=x.device)
        if self.count_include_pad:
            counted = F.pad(counted, torch_pad_list([(begin, onnx_end) for begin, _, onnx_end in plan]), value=1.0)
            counted = F.pad(counted, torch_pad_list([(0, end - onnx_end) for _, end, onnx_end in plan]))
        else:
            counted = F.pad(counted, torch_pad_list([(begin, end) for begin, end, _ in plan]))
        return sums / window_sums(counted, self.window)


class LpPool(nn.Module, OnnxToTorchModule):
    """ONNX LpPool: the p-norm of each window (zero padding)."""

    def __init__(self, window: Window, p: float):
        super().__init__()
        self.window, self.p = window, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank(self.window, x)
        plan = self.window.padding(tuple(x.shape[2:]))
        powered = F.pad(x.abs().pow(self.p), torch_pad_list([(begin, end) for begin, end, _ in plan]))
        return window_sums(powered, self.window).pow(1.0 / self.p)


class GlobalMaxPool(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def convert_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    window = Window.of(node)
    indices = len(node.output_values) > 1  # positional: a listed Indices output is computed even when unnamed
    module = MaxPool(window, indices=indices, storage_order=int(node.attributes.get("storage_order", 0)))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


def convert_average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = AveragePool(Window.of(node), bool(node.attributes.get("count_include_pad", 0)))
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node))


def convert_lp_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = LpPool(Window.of(node), float(node.attributes.get("p", 2)))
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping(node))


def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=mapping(node))
