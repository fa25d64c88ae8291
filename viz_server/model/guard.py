"""Stage 1: refuse untrusted model bytes that are unsafe or not an image model, before anything else runs.

Nothing here opens a file named inside a model: tensors stored as external data are refused outright.
"""

from __future__ import annotations

import math

import onnx
from google.protobuf.message import DecodeError

from viz_server.errors import UserError

MAX_MODEL_BYTES = 1 << 30
"""Largest ONNX file accepted (1 GiB); protobuf itself cannot hold more than 2 GiB."""

MAX_INPUT_ELEMENTS = 4096 * 4096 * 4
"""Largest single input image (elements per batch item) a model may declare."""

CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


MODEL_WIRE_TYPES = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
"""ModelProto's fields and their protobuf wire types (0 varint, 2 length-delimited); field 7 is the graph."""


def looks_like_onnx(data: bytes) -> bool:
    """Whether the bytes read as an ONNX ModelProto at the top level: every field header well formed (ModelProto's
    own fields with their wire types; unknown ones tolerated), every length inside the file, and a graph. A walk
    over the field headers only, nothing nested decoded: cheap enough to refuse a picture or an archive uploaded
    as a model before anything is stored."""
    position, graph = 0, False
    while position < len(data):
        key, position = _varint(data, position)
        if key is None or key >> 3 == 0:
            return False
        field, wire = key >> 3, key & 7
        if MODEL_WIRE_TYPES.get(field, wire) != wire:
            return False
        if wire == 0:
            value, position = _varint(data, position)
            if value is None:
                return False
        elif wire == 2:
            length, position = _varint(data, position)
            if length is None or position + length > len(data):
                return False
            position += length
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            return False  # groups (3, 4) are not in any ONNX message; 6 and 7 do not exist
        graph |= field == 7
    return graph and position == len(data)


def _varint(data: bytes, position: int) -> tuple[int | None, int]:
    value, shift = 0, 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    return None, position


def guard(data: bytes, max_bytes: int = MAX_MODEL_BYTES) -> onnx.ModelProto:
    """Parse and check untrusted ONNX bytes; return the model or raise ``UserError`` with one sentence."""
    if not data:
        raise UserError("the model file is empty; upload an exported .onnx file.")
    if len(data) > max_bytes:
        raise UserError(f"the model file is {len(data) / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB allowed.")
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, RuntimeWarning, ValueError, TypeError):
        raise UserError("the file is not an ONNX model (it does not parse as one); upload an exported .onnx file.") from None
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise UserError("the file is not a usable ONNX model (it has no graph); upload an exported .onnx file.")

    refuse_external_data(model.graph)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "invalid graph"
        raise UserError(f"the model fails the ONNX checker ({first_line}); re-export it.") from None
    check_image_input(model)
    return model


def refuse_external_data(graph: onnx.GraphProto) -> None:
    """Refuse any tensor whose bytes live outside the model file (initializers, constants, subgraphs)."""
    for tensor in _all_tensors(graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise UserError(f"tensor '{tensor.name[:80]}' keeps its data in an external file; re-export the model with all weights inside the .onnx file.")


def control_flow(graph: onnx.GraphProto) -> str:
    """A sentence naming the first control-flow node (a node with a subgraph: If, Loop, Scan ...), or "" when none.
    onnxruntime runs such a model; the torch graph cannot hold it, so the model runs forward-only."""
    for node in graph.node:
        if node.op_type in CONTROL_FLOW_OPS or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return f"the model uses the control-flow op {node.op_type} (node '{node.name[:80]}'), which its torch graph cannot hold"
    return ""


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def image_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are real inputs (not initializers listed as inputs)."""
    initializer_names = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializer_names]


def input_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """Declared dimensions of an input; None for a symbolic or missing size."""
    dims = value.type.tensor_type.shape.dim
    return [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in dims]


def check_image_input(model: onnx.ModelProto) -> None:
    """One float input of rank 4 with sane declared sizes, or a sentence saying why this is no image model."""
    inputs = image_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(f"'{value.name[:40]}'" for value in inputs)
        raise UserError(f"the model has {len(inputs)} inputs ({names}); viz-server analyses image models with exactly one image input.")
    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise UserError(f"input '{value.name[:80]}' is not a tensor; viz-server analyses image models.")
    elem_type = value.type.tensor_type.elem_type
    if elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE):
        type_name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else str(elem_type)
        raise UserError(
            f"input '{value.name[:80]}' has element type {type_name}; viz-server needs a float image input "
            "(re-export the model with the uint8 preprocessing left out)."
        )
    dims = input_dims(value)
    if len(dims) != 4:
        shown = "x".join("?" if dim is None else str(dim) for dim in dims) or "a scalar"
        raise UserError(f"input '{value.name[:80]}' has shape {shown}; viz-server analyses image models whose input is N x C x H x W or N x H x W x C.")
    declared = [dim for dim in dims[1:] if dim is not None]
    if any(dim > 65536 for dim in declared) or math.prod(declared) > MAX_INPUT_ELEMENTS:
        raise UserError(
            f"input '{value.name[:80]}' declares an image of {'x'.join(str(d) for d in dims[1:])} values, "
            f"more than the {MAX_INPUT_ELEMENTS:,} allowed per image."
        )
    if dims[0] is not None and dims[0] > 4096:
        raise UserError(f"input '{value.name[:80]}' declares a fixed batch of {dims[0]}, more than 4096.")
