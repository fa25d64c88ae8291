"""Models in other float precisions computed in float32: a normalize pass and the tolerances their verification
uses.

A float16, bfloat16 (or float64) export is analysed as the same graph in float32 (torch's CPU kernels and most
gradient code want float32, and half-precision gradients underflow). ``compute_in_float32`` rewrites the graph's
types; ``verify`` then checks the float32 torch graph against onnxruntime on the float32 graph (the conversion)
and against onnxruntime on the original half-precision graph with ``HALF_TOLERANCE`` (how far the analysed
model is from the one that was exported), and the conversion report says so.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HALF_TYPES = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
OTHER_FLOATS = {**HALF_TYPES, TensorProto.DOUBLE: "float64"}
TOLERANCE = {"float16": 2e-2, "bfloat16": 6e-2, "float64": 1e-3}
"""Relative difference allowed between the float32 analysis graph and the original (float16 keeps 11 significant
bits, bfloat16 8, and their errors grow with depth; float64 loses nothing that matters)."""


def model_precision(model: onnx.ModelProto) -> str | None:
    """ "float16", "bfloat16" or "float64" when the image input or most weights are in that precision, else None."""
    graph = model.graph
    types = [value.type.tensor_type.elem_type for value in graph.input] + [tensor.data_type for tensor in graph.initializer]
    found = [OTHER_FLOATS[t] for t in types if t in OTHER_FLOATS]
    return max(set(found), key=found.count) if found else None


def compute_in_float32(model: onnx.ModelProto) -> str | None:
    """Rewrite every float16/bfloat16 tensor, type and cast of the graph to float32 (and float64 ones, for a
    float64 model; a float32 model keeps the float64 steps it asks for)."""
    kind = model_precision(model)
    converted = set(HALF_TYPES) | ({TensorProto.DOUBLE} if kind == "float64" else set())
    if kind is None and not any(_mentions(node, converted) for node in model.graph.node):
        return None
    _rewrite_graph(model.graph, converted)
    kind = kind or "float16"
    return f"computes the {kind} graph in float32 (checked against the {kind} original with a {TOLERANCE[kind]:g} relative tolerance)"


def _mentions(node: onnx.NodeProto, types: set[int]) -> bool:
    return any(
        (attribute.type == onnx.AttributeProto.INT and attribute.name in ("to", "dtype") and attribute.i in types)
        or (attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in types)
        for attribute in node.attribute
    )


def _as_float32(tensor: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _rewrite_graph(graph: onnx.GraphProto, types: set[int]) -> None:
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type in types:
            graph.initializer[index].CopyFrom(_as_float32(tensor))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type in types:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.INT and attribute.name in ("to", "dtype") and attribute.i in types:
                attribute.i = TensorProto.FLOAT
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in types:
                attribute.t.CopyFrom(_as_float32(attribute.t))
            elif attribute.type == onnx.AttributeProto.GRAPH:
                _rewrite_graph(attribute.g, types)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _rewrite_graph(subgraph, types)


def original_inputs(model: onnx.ModelProto, name: str, batch: np.ndarray) -> np.ndarray:
    """A float32 batch cast to the element type the original model's input ``name`` expects."""
    value = next(v for v in model.graph.input if v.name == name)
    element = value.type.tensor_type.elem_type
    return batch.astype(helper.tensor_dtype_to_np_dtype(element)) if element in OTHER_FLOATS else batch
