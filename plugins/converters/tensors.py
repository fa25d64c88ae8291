"""Shape and layout ops: Reshape with ``allowzero``, Pad-18+ (``axes`` input, ``wrap`` mode), Split-18
(``num_outputs``), CastLike."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn

from viz_server_plugins.converters.values import const_list, mapping, rank


def convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """allowzero=1 only differs when the target holds a 0; with a constant target without zeros it is plain."""
    if node.attributes.get("allowzero", 0) == 1:
        target = const_list(node.input_values[1], graph, "shape", node)
        if target is None or 0 in target:
            raise NotImplementedError("Reshape with allowzero=1 and a zero-sized target is not supported")
    return OperationConverterResult(torch_module=OnnxReshape(), onnx_mapping=OnnxMapping(node.input_values, node.output_values))


class Pad(nn.Module, OnnxToTorchModule):
    """ONNX Pad with static pads over all axes (torch order), modes constant/reflect/edge/wrap."""

    MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}

    def __init__(self, pads: list[int], mode: str, value: float):
        super().__init__()
        self.pads, self.mode, self.value = pads, self.MODES[mode], value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = x.dim()
        begins, ends = self.pads[:rank], self.pads[rank:]
        torch_pads: list[int] = []
        for axis in reversed(range(rank)):
            torch_pads += [begins[axis], ends[axis]]
        while len(torch_pads) > 2 and torch_pads[-1] == 0 and torch_pads[-2] == 0:
            torch_pads = torch_pads[:-2]  # torch's non-constant modes only pad trailing axes
        if self.mode == "constant":
            return F.pad(x, torch_pads, mode="constant", value=self.value)
        return F.pad(x, torch_pads, mode=self.mode)


def convert_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in Pad.MODES:
        raise NotImplementedError(f"Pad mode {mode} is not supported")
    pads = const_list(node.input_values[1], graph, "pads", node)
    inputs = list(node.input_values) + [""] * 4
    value = 0.0
    if inputs[2]:
        raw = get_const_value(inputs[2], graph)
        value = float(raw.reshape(-1)[0]) if isinstance(raw, torch.Tensor) and raw.numel() else float(raw or 0)
    input_rank = rank(node.input_values[0], graph)
    axes = const_list(inputs[3], graph, "axes", node) if inputs[3] else None
    if axes is not None:
        if input_rank is None:
            raise NotImplementedError("Pad with axes on an input of unknown rank is not supported")
        full = [0] * (2 * input_rank)
        for i, axis in enumerate(axes):
            full[axis % input_rank] = pads[i]
            full[input_rank + axis % input_rank] = pads[len(axes) + i]
        pads = full
    return OperationConverterResult(torch_module=Pad(pads, mode, value), onnx_mapping=mapping(node))


class Split(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int, sizes: list[int] | None, parts: int):
        super().__init__()
        self.axis, self.sizes, self.parts = axis, sizes, parts

    def forward(self, x: torch.Tensor):
        if self.sizes is not None:
            return tuple(torch.split(x, self.sizes, dim=self.axis))
        length = x.shape[self.axis]
        chunk = math.ceil(length / self.parts)  # ONNX: the last chunk is smaller when uneven
        return tuple(torch.split(x, chunk, dim=self.axis))


def convert_split_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    sizes = const_list(node.input_values[1], graph, "split", node) if len(node.input_values) > 1 else None
    parts = node.attributes.get("num_outputs", len(node.output_values))
    return OperationConverterResult(torch_module=Split(node.attributes.get("axis", 0), sizes, parts), onnx_mapping=mapping(node))


class CastLike(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)


def convert_cast_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=CastLike(), onnx_mapping=mapping(node, 2))
