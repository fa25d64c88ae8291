"""What one picture through a model will cost, read from the graph before anything runs it.

ONNX shape inference (with constant shapes propagated) at batch 1 gives every tensor's size it can know; the
estimate is the weights plus the three largest tensors (what is alive around the largest step), and the
multiply-adds of the convolutions and matrix products. A tiny file can declare a tensor of gigabytes
(``ConstantOfShape``, ``Expand``, a conv with a million channels, an outer product) or a convolution of hours; such a
model is refused in one sentence naming the budget, before a job process is asked to hold it. Shapes that depend
on the picture's values cannot be known here: the job process's memory limit is the backstop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import helper, shape_inference

from viz_server.errors import UserError

MAX_NODES = 50_000
"""More nodes than any image model has (a ViT-L export has about 3,000); each becomes a torch module."""
MAX_OPERATIONS = 2e12
"""Multiply-adds for one picture (a ViT-L/16 at 224 needs 6e10, a segmenter at 1024 x 1024 a few 1e11)."""


@dataclass(frozen=True)
class Cost:
    weights: int  # bytes
    largest: tuple[int, ...]  # bytes of the three largest tensors whose size is known, largest first
    largest_tensor: str
    operations: float  # multiply-adds of Conv, ConvTranspose, MatMul and Gemm with known shapes

    @property
    def memory(self) -> int:
        return self.weights + sum(self.largest)


def estimate(model: onnx.ModelProto, default_side: int = 224) -> Cost:
    """The cost of one picture at batch 1 (a symbolic spatial side taken as ``default_side``)."""
    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    weights = {tensor.name for tensor in sized.graph.initializer}
    for value in sized.graph.input:
        if value.name in weights or not value.type.tensor_type.HasField("shape"):
            continue
        for position, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = 1 if position == 0 else default_side
    try:
        inferred = shape_inference.infer_shapes(sized, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot read is judged by the job's limit instead
        inferred = sized
    graph = inferred.graph
    shapes: dict[str, tuple[int, ...]] = {}
    sizes: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim] if tensor_type.HasField("shape") else []
        if not dims or min(dims) < 0:
            continue
        shapes[value.name] = tuple(dims)
        element = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize if tensor_type.elem_type else 4
        sizes[value.name] = math.prod(dims) * element
    weight_bytes = sum(_tensor_bytes(tensor) for tensor in graph.initializer)
    ranked = sorted(sizes.items(), key=lambda item: -item[1])[:3]
    return Cost(weight_bytes, tuple(size for _, size in ranked), ranked[0][0] if ranked else "", _operations(graph, shapes))


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    element = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if tensor.data_type else 4
    return math.prod(tensor.dims) * element


def _operations(graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]]) -> float:
    dims = {**shapes, **{tensor.name: tuple(tensor.dims) for tensor in graph.initializer}}
    total = 0.0
    for node in graph.node:
        out = dims.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in dims:
            kernel = dims[node.input[1]]  # out x in/groups x kh x kw (ConvTranspose: in x out/groups x ...)
            source = out if node.op_type == "Conv" else dims.get(node.input[0], out)  # each element it is made from
            total += math.prod(source) * math.prod(kernel[1:])
        elif node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[0] in dims:
            inner = dims[node.input[0]][-1] if node.op_type == "MatMul" or not _attribute(node, "transA") else dims[node.input[0]][0]
            total += math.prod(out) * inner
    return total


def _attribute(node: onnx.NodeProto, name: str) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == name), 0)


def check_budget(model: onnx.ModelProto, budget_bytes: int | None) -> Cost | None:
    """Refuse, in one sentence, a model whose picture would take more memory than ``budget_bytes`` (a job's
    budget), more than ``MAX_OPERATIONS`` multiply-adds, or more than ``MAX_NODES`` nodes."""
    if len(model.graph.node) > MAX_NODES:
        raise UserError(f"the model has {len(model.graph.node):,} nodes, more than the {MAX_NODES:,} any image model needs; it was refused.")
    if budget_bytes is None:
        return None
    cost = estimate(model)
    if cost.memory > budget_bytes:
        raise UserError(
            f"one picture through this model needs about {cost.memory / 2**20:,.0f} MiB (its weights and its largest tensors, "
            f"'{cost.largest_tensor[:60]}' alone {cost.largest[0] / 2**20:,.0f} MiB), more than a job's budget of "
            f"{budget_bytes / 2**20:,.0f} MiB (VIZ_SERVER_JOB_MEMORY_MB); it was refused."
        )
    if cost.operations > MAX_OPERATIONS:
        raise UserError(
            f"one picture through this model takes about {cost.operations:.1e} multiply-adds, more than the {MAX_OPERATIONS:.0e} "
            "a job is given; it was refused."
        )
    return cost
