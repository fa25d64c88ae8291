"""Reading a node's inputs while converting: constant values, ranks, and the input/output mapping."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, get_const_value


def const_list(name: str, graph: OnnxGraph, what: str, node: OnnxNode) -> list[int] | None:
    """A constant integer input as a list (None when the input is absent); a computed one is refused."""
    if not name:
        return None
    try:
        value = get_const_value(name, graph)
    except KeyError:
        raise NotImplementedError(f"{node.operation_type} with a computed {what} input is not supported") from None
    return [int(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else list(value))]


def rank(name: str, graph: OnnxGraph) -> int | None:
    """The rank shape inference found for a tensor, or None."""
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return len(info.type.tensor_type.shape.dim)


def mapping(node: OnnxNode, inputs: int = 1) -> OnnxMapping:
    """The node's first ``inputs`` inputs and all its outputs, as the converted module's arguments and results."""
    return OnnxMapping(inputs=node.input_values[:inputs], outputs=node.output_values)
