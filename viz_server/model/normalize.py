"""Stage 2: rewrite a guarded ONNX model into the plain form the converter and the techniques need.

Passes (each returns a note for the conversion report when it changed something):
- ``name_nodes``: every node gets a unique, non-empty name (layer names must be stable handles).
- ``keep_main_output``: only the first graph output is kept; nodes feeding nothing else are dropped.
- ``fold_constants``: Constant, Identity-of-initializer, ConstantOfShape and any deterministic node whose
  inputs are all constant become initializers (PaddlePaddle exports and torch's de-duplicated weights).
- ``strip_softmax``: a final Softmax/LogSoftmax is removed so the model returns pre-softmax scores.
- ``infer_shapes``: ONNX shape inference, so every layer has an output shape.
- ``dynamic_batch``: a fixed batch-1 input is made symbolic, with Reshape targets copying the batch axis
  (``verify`` later keeps this only if batch 2 matches onnxruntime image by image).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from viz_server.errors import UserError

MAX_FOLDED_ELEMENTS = 1 << 26
"""Largest tensor constant folding may create (64 Mi elements); bigger nodes are left to run."""

NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
SHAPE_ONLY_OPS = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Run every pass in order; return the new model and the notes of passes that changed something."""
    model = _copy(model)
    notes: list[str] = []
    for step in (name_nodes, keep_main_output, fold_constants, strip_softmax, infer_shapes):
        note = step(model)
        if note:
            notes.append(note)
    return model, notes


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for opset in model.opset_import:
        if opset.domain in (domain, "ai.onnx" if domain == "" else domain):
            return opset.version
    return 1


# ---- passes ---------------------------------------------------------------------------------------

def name_nodes(model: onnx.ModelProto) -> str | None:
    """Give unnamed or duplicate-named nodes a unique name of the form ``OpType_index``."""
    seen: Counter[str] = Counter()
    renamed = 0
    for index, node in enumerate(model.graph.node):
        if not node.name or seen[node.name]:
            node.name = f"{node.op_type}_{index}"
            renamed += 1
        seen[node.name] += 1
    return f"named {renamed} unnamed or duplicate nodes" if renamed else None


def keep_main_output(model: onnx.ModelProto) -> str | None:
    """Keep only the first graph output (the main scores) and drop nodes it does not need."""
    graph = model.graph
    dropped_outputs = [output.name for output in graph.output[1:]]
    del graph.output[1:]
    removed = remove_dead_nodes(model)
    if dropped_outputs:
        return f"kept the main output '{graph.output[0].name}', dropped {len(dropped_outputs)} other output(s)"
    if removed:
        return f"removed {removed} nodes that feed no output"
    return None


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Drop nodes and initializers the graph outputs do not depend on."""
    graph = model.graph
    needed = {output.name for output in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    removed = len(graph.node) - len(kept)
    if removed:
        del graph.node[:]
        graph.node.extend(reversed(kept))
    unused = [tensor for tensor in graph.initializer if tensor.name not in needed]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return removed


def fold_constants(model: onnx.ModelProto) -> str | None:
    """Turn every node computable from constants alone into an initializer."""
    graph = model.graph
    constants: dict[str, onnx.TensorProto] = {tensor.name: tensor for tensor in graph.initializer}
    opset = opset_version(model)
    kept: list[onnx.NodeProto] = []
    folded = Counter()
    for node in graph.node:
        values = _fold_node(node, constants, opset)
        if values is None:
            kept.append(node)
            continue
        folded[node.op_type] += 1
        for name, value in zip(node.output, values):
            if name:
                tensor = numpy_helper.from_array(np.asarray(value), name)
                constants[name] = tensor
                graph.initializer.append(tensor)
    if not folded:
        return None
    del graph.node[:]
    graph.node.extend(kept)
    remove_dead_nodes(model)
    _drop_initializer_inputs(model)
    summary = ", ".join(f"{count} {op}" for op, count in folded.most_common())
    return f"folded constant nodes into initializers ({summary})"


def _drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """Old exporters list every initializer as a graph input too; keep only real inputs."""
    names = {tensor.name for tensor in model.graph.initializer}
    extra = [value for value in model.graph.input if value.name in names]
    for value in extra:
        model.graph.input.remove(value)


def _fold_node(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], opset: int) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC_OPS:
        return None
    if node.op_type == "Constant":
        return [_constant_value(node)]
    inputs = [name for name in node.input if name]
    if not inputs or not all(name in constants for name in inputs):
        return None
    arrays = [numpy_helper.to_array(constants[name]) if name else None for name in node.input]
    if not _small_enough(node, arrays):
        return None
    if node.op_type == "Identity":
        return [arrays[0]]
    try:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(node, opsets={"": opset})
        feeds = {name: array for name, array in zip(node.input, arrays) if name}
        outputs = evaluator.run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the reference cannot evaluate is simply left in the graph
        return None
    if any(np.asarray(out).size > MAX_FOLDED_ELEMENTS for out in outputs):
        return None
    return [np.asarray(out) for out in outputs]


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attribute = node.attribute[0] if node.attribute else None
    if attribute is None:
        raise UserError(f"Constant node '{node.name[:80]}' has no value; re-export the model.")
    value = helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return numpy_helper.to_array(value)
    if attribute.name == "sparse_value":
        dense = numpy_helper.to_array(value.values)
        indices = numpy_helper.to_array(value.indices)
        out = np.zeros(int(math.prod(value.dims)), dtype=dense.dtype)
        out[indices.reshape(-1) if indices.ndim == 1 else np.ravel_multi_index(indices.T, tuple(value.dims))] = dense
        return out.reshape(tuple(value.dims))
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if attribute.name in dtypes:
        return np.asarray(value, dtype=dtypes[attribute.name])
    return np.asarray(value)


def _small_enough(node: onnx.NodeProto, arrays: list[np.ndarray | None]) -> bool:
    """Refuse to fold nodes whose output would be huge (ConstantOfShape/Expand/Tile/Range bombs)."""
    try:
        if node.op_type == "ConstantOfShape":
            return math.prod(int(d) for d in arrays[0].reshape(-1)) <= MAX_FOLDED_ELEMENTS
        if node.op_type == "Expand":
            target = [int(d) for d in arrays[1].reshape(-1)]
            return math.prod(max(d, 1) for d in target) * max(arrays[0].size, 1) <= MAX_FOLDED_ELEMENTS
        if node.op_type == "Tile":
            return math.prod(int(d) for d in arrays[1].reshape(-1)) * arrays[0].size <= MAX_FOLDED_ELEMENTS
        if node.op_type == "Range":
            start, limit, delta = (float(np.asarray(a).reshape(-1)[0]) for a in arrays[:3])
            return delta != 0 and abs((limit - start) / delta) <= MAX_FOLDED_ELEMENTS
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return False
    return sum(array.size for array in arrays if array is not None) <= MAX_FOLDED_ELEMENTS


def strip_softmax(model: onnx.ModelProto) -> str | None:
    """If the main output is a Softmax/LogSoftmax (possibly followed by shape-only ops), bypass it."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    name = graph.output[0].name
    node = producers.get(name)
    while node is not None and node.op_type in SHAPE_ONLY_OPS:
        node = producers.get(node.input[0])
    if node is None or node.op_type not in SOFTMAX_OPS:
        return None
    softmax_input, softmax_output = node.input[0], node.output[0]
    graph.node.remove(node)
    if softmax_output == name:
        # the softmax itself was the output: rename its input's producer output to the graph output name
        source = producers.get(softmax_input)
        if source is not None:
            source.output[list(source.output).index(softmax_input)] = name
            for other in graph.node:
                for i, input_name in enumerate(other.input):
                    if input_name == softmax_input:
                        other.input[i] = name
        else:
            graph.node.append(helper.make_node("Identity", [softmax_input], [name], name="softmax_bypass"))
    else:
        for other in graph.node:
            for i, input_name in enumerate(other.input):
                if input_name == softmax_output:
                    other.input[i] = softmax_input
    return f"removed the final {node.op_type} (node '{node.name}') so techniques see pre-softmax scores"


def infer_shapes(model: onnx.ModelProto) -> str | None:
    """Fill in value_info with ONNX shape inference (best effort: a failure only loses shapes)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - shape inference is advisory
        return f"shape inference failed ({str(exc)[:120]}); layer shapes come from a test run"
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    output_type = inferred.graph.output[0].type
    model.graph.output[0].type.CopyFrom(output_type)
    return None


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy whose fixed batch-1 input is symbolic and whose constant Reshape targets follow the batch axis.

    Returns None when the batch axis is already dynamic or not 1. The rewrite is a proposal: ``verify``
    keeps it only when batch 2 reproduces onnxruntime's per-image outputs.
    """
    value = next(v for v in model.graph.input if v.name not in {t.name for t in model.graph.initializer})
    batch = value.type.tensor_type.shape.dim[0]
    if not (batch.HasField("dim_value") and batch.dim_value == 1):
        return None
    candidate = _copy(model)
    candidate_input = next(v for v in candidate.graph.input if v.name == value.name)
    candidate_input.type.tensor_type.shape.dim[0].dim_param = "batch"
    initializers = {tensor.name: tensor for tensor in candidate.graph.initializer}
    consumers = Counter(name for node in candidate.graph.node for name in node.input)
    for node in candidate.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        allowzero = any(a.name == "allowzero" and a.i == 1 for a in node.attribute)
        target = numpy_helper.to_array(initializers[node.input[1]]).copy()
        if target.ndim != 1 or target.size < 2 or target[0] != 1:
            continue
        if -1 not in target:
            target[0] = -1  # infer the batch axis from the element count
        elif not allowzero:
            target[0] = 0  # 0 = copy the input's dimension: the batch axis
        else:
            continue
        new_name = f"{node.input[1]}__batch" if consumers[node.input[1]] > 1 else node.input[1]
        tensor = numpy_helper.from_array(target, new_name)
        if new_name == node.input[1]:
            initializers[new_name].CopyFrom(tensor)
        else:
            candidate.graph.initializer.append(tensor)
            node.input[1] = new_name
    del candidate.graph.value_info[:]
    candidate.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    infer_shapes(candidate)
    return candidate
