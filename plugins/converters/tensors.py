"""Shape ops: Reshape with ``allowzero``, Pad-18+ (``axes`` input, ``wrap`` mode, pads computed by the graph),
Split-18 (``num_outputs``, computed sizes), CastLike."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from viz_server_plugins.converters.values import mapping


class ReshapeAllowZero(nn.Module, OnnxToTorchModule):
    """Reshape with allowzero=1: a 0 in the target is a zero-sized axis, not "copy the input's axis"."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return x.reshape([int(v) for v in shape.reshape(-1).tolist()])


def convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = ReshapeAllowZero() if node.attributes.get("allowzero", 0) == 1 else OnnxReshape()
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(node.input_values[:2], node.output_values))


class Pad(nn.Module, OnnxToTorchModule):
    """ONNX Pad, modes constant/reflect/edge/wrap. Pads (ONNX order), the constant value and the axes come as
    inputs, constant or computed by the graph (dynamic padding, as window attention exports have)."""

    MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}

    def __init__(self, mode: str, present: tuple[str, ...]):
        super().__init__()
        self.mode, self.present = self.MODES[mode], present

    def forward(self, x: torch.Tensor, pads: torch.Tensor, *optional: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.present, optional))
        onnx_pads = [int(v) for v in pads.reshape(-1).tolist()]
        rank = x.dim()
        if "axes" in given:
            axes = [int(a) % rank for a in given["axes"].reshape(-1).tolist()]
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = onnx_pads[i], onnx_pads[len(axes) + i]
            onnx_pads = full
        begins, ends = onnx_pads[:rank], onnx_pads[rank:]
        torch_pads: list[int] = []
        for axis in reversed(range(rank)):
            torch_pads += [begins[axis], ends[axis]]
        while len(torch_pads) > 2 and torch_pads[-1] == 0 and torch_pads[-2] == 0:
            torch_pads = torch_pads[:-2]  # torch's non-constant modes only pad trailing axes
        if self.mode == "constant":
            value = given.get("value")
            return F.pad(x, torch_pads, mode="constant", value=float(value.reshape(-1)[0]) if value is not None and value.numel() else 0.0)
        return F.pad(x, torch_pads, mode=self.mode)


def convert_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in Pad.MODES:
        raise NotImplementedError(f"Pad mode {mode} is not supported")
    inputs = (list(node.input_values) + [""] * 4)[:4]
    present = tuple(name for name, value in zip(("value", "axes"), inputs[2:]) if value)
    used = tuple(value for value in inputs if value)
    return OperationConverterResult(torch_module=Pad(mode, present), onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values))


class Split(nn.Module, OnnxToTorchModule):
    """Split-18: explicit sizes (an input, constant or computed) or ``num_outputs`` parts, the last one smaller."""

    def __init__(self, axis: int, parts: int):
        super().__init__()
        self.axis, self.parts = axis, parts

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None):
        if sizes is not None:
            return tuple(torch.split(x, [int(v) for v in sizes.reshape(-1).tolist()], dim=self.axis))
        chunk = math.ceil(x.shape[self.axis] / self.parts)
        return tuple(torch.split(x, chunk, dim=self.axis))


def convert_split_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    parts = node.attributes.get("num_outputs", len(node.output_values))
    inputs = node.input_values[:2] if len(node.input_values) > 1 and node.input_values[1] else node.input_values[:1]
    return OperationConverterResult(
        torch_module=Split(node.attributes.get("axis", 0), parts), onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values)
    )


class CastLike(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)


def convert_cast_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=CastLike(), onnx_mapping=mapping(node, 2))


class InferenceDropout(nn.Module, OnnxToTorchModule):
    """Dropout at inference: the identity, and an all-true mask when the graph asks for one."""

    def __init__(self, mask: bool):
        super().__init__()
        self.mask = mask

    def forward(self, x: torch.Tensor):
        return (x, torch.ones_like(x, dtype=torch.bool)) if self.mask else x


def convert_dropout(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Any Dropout version (a ``seed`` only matters in training); training_mode must be absent or constant false."""
    from onnx2torch.utils.common import get_const_value

    training = node.input_values[2] if len(node.input_values) > 2 else ""
    if training:
        try:
            value = get_const_value(training, graph)
        except KeyError:
            raise NotImplementedError("Dropout with a computed training_mode is not supported") from None
        ratio = node.input_values[1] if len(node.input_values) > 1 else ""
        try:
            zero_ratio = bool(ratio) and float(torch.as_tensor(get_const_value(ratio, graph)).reshape(-1)[0]) == 0.0
        except KeyError:
            zero_ratio = False
        if bool(torch.as_tensor(value).reshape(-1)[0]) and not zero_ratio:
            raise NotImplementedError("Dropout in training mode is random; export the model in eval mode")
    if node.attributes.get("is_test", 1) == 0:
        raise NotImplementedError("Dropout with is_test=0 (training) is random; export the model in eval mode")
    mask = len(node.output_values) > 1  # positional: a listed mask output is returned even when unnamed
    return OperationConverterResult(torch_module=InferenceDropout(mask), onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))
