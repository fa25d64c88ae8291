"""Stage 2: rewrite a guarded ONNX model into the plain form the converter and the techniques need.

Passes (each returns a note for the conversion report when it changed something):
- ``name_nodes``: every node gets a unique, non-empty name (layer names must be stable handles).
- ``compute_in_float32``: a float16/bfloat16 (or float64) model becomes the same graph in float32 (``precision``).
- ``keep_main_output``: only the first graph output is kept; nodes feeding nothing else are dropped.
- ``isolate_outputs``: an output that is one of several of its node's gets an Identity of its own.
- ``fold_constants``: Constant, Identity-of-initializer, ConstantOfShape and any deterministic node whose
  inputs are all constant become initializers (PaddlePaddle exports and torch's de-duplicated weights).
- ``strip_softmax``: a final Softmax/LogSoftmax is removed so the model returns pre-softmax scores.
- ``fuse_gelu``: the five-node erf form of GELU that exporters before opset 20 write becomes one node, a
  model-local function (onnxruntime and shape inference run its body; the converter makes it one
  ``F.gelu``, which back-propagates in one kernel instead of five).
- ``fuse_silu``: ``x * sigmoid(x)`` (SiLU / swish, EfficientNet's activation) becomes one ``Silu`` node the
  same way (one ``F.silu``).
- ``fuse_linear``: MatMul by a constant matrix followed by Add of a constant bias (how exporters write a
  fully connected layer on more than two dimensions) becomes one ``Linear`` node, a model-local function;
  the converter makes it one ``F.linear`` (one fused multiply-add instead of a matmul and an add).
- ``infer_shapes``: ONNX shape inference, so every layer has an output shape.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from viz_server.errors import UserError
from viz_server.model.precision import compute_in_float32

MAX_FOLDED_ELEMENTS = 1 << 26
"""Largest tensor constant folding may create (64 Mi elements); bigger nodes are left to run."""

NONDETERMINISTIC_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})
SHAPE_ONLY_OPS = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})


def normalize(model: onnx.ModelProto, *, in_float32: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """Run every pass in order; return the new model and the notes of passes that changed something.

    ``in_float32=False`` keeps a half-precision model's types (the reference its float32 conversion is checked
    against)."""
    model = _copy(model)
    notes: list[str] = []
    steps = (name_nodes, compute_in_float32, keep_main_output, isolate_outputs, fold_constants, strip_softmax, fuse_gelu, fuse_silu, fuse_linear, infer_shapes)
    for step in steps:
        if step is compute_in_float32 and not in_float32:
            continue
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


def isolate_outputs(model: onnx.ModelProto) -> str | None:
    """A graph output that is one of several outputs of its node goes through an Identity of its own (the
    converter returns a multi-output node's results together)."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output if name}
    isolated = []
    for output in graph.output:
        node = producers.get(output.name)
        if node is None or len(node.output) < 2:
            continue
        inner = f"{output.name}__value"
        node.output[list(node.output).index(output.name)] = inner
        for consumer in graph.node:
            consumer.input[:] = [inner if name == output.name else name for name in consumer.input]
        graph.node.append(helper.make_node("Identity", [inner], [output.name], name=f"{node.name}__output"))
        isolated.append(output.name)
    return f"gave output(s) {', '.join(isolated[:3])} an Identity of their own" if isolated else None


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


FUSED_DOMAIN = "viz_server_fused"
"""Domain of the model-local functions ``fuse_gelu`` writes (the converter has a converter for each)."""


def fuse_gelu(model: onnx.ModelProto) -> str | None:
    """Replace each erf-form GELU, ``x * 0.5 * (1 + erf(x / sqrt(2)))`` in any of the orders exporters write,
    by one ``Gelu`` node of ``FUSED_DOMAIN`` defined as a model-local function with the same body."""
    index = _GraphIndex(model)
    fused = []
    for erf in [node for node in model.graph.node if node.op_type == "Erf" and not node.domain]:
        scaled = index.producers.get(erf.input[0])
        if scaled is None or scaled.op_type not in ("Div", "Mul") or len(scaled.input) != 2 or index.only_consumer(scaled.output[0]) is not erf:
            continue
        x, constant = scaled.input
        if scaled.op_type == "Mul" and constant not in index.constants:
            constant, x = x, constant
        expected = math.sqrt(2.0) if scaled.op_type == "Div" else 1 / math.sqrt(2.0)
        factor = index.scalar(constant)
        if factor is None or index.constants[constant].dtype != np.float32 or not math.isclose(factor, expected, rel_tol=1e-3):
            continue  # (the function body is written in float32)
        plus_one = index.only_consumer(erf.output[0])
        if plus_one is None or plus_one.op_type != "Add" or index.scalar(index.other_input(plus_one, erf.output[0]) or "") != 1.0:
            continue
        tail = _gelu_tail(index, plus_one.output[0], x)
        if tail is not None:
            new = helper.make_node("Gelu", [x], [tail[-1].output[0]], name=tail[-1].name, domain=FUSED_DOMAIN)
            fused.append(([scaled, erf, plus_one, *tail], new, tail[-1]))
    if not fused:
        return None
    _replace(model, fused, _gelu_function)
    return f"fused {len(fused)} erf-form GELU(s) into one node each"


def _gelu_tail(index: _GraphIndex, added: str, x: str) -> list[onnx.NodeProto] | None:
    """The two multiplications around ``a = 1 + erf``: (x * a) * 0.5, (x * 0.5) * a or x * (a * 0.5), in
    graph order (the last one computes the GELU), or None."""
    first = index.only_consumer(added)
    if first is None or first.op_type != "Mul":
        return None
    partner = index.other_input(first, added)
    half = index.producers.get(partner or "")
    if half is not None and half.op_type == "Mul" and x in half.input and index.only_consumer(partner) is first:
        return [half, first] if index.scalar(index.other_input(half, x) or "") == 0.5 else None  # (x * 0.5) * a
    second = index.only_consumer(first.output[0])
    if second is None or second.op_type != "Mul":
        return None
    if partner == x and index.scalar(index.other_input(second, first.output[0]) or "") == 0.5:  # (x * a) * 0.5
        return [first, second]
    if partner is not None and index.scalar(partner) == 0.5 and index.other_input(second, first.output[0]) == x:  # x * (a * 0.5)
        return [first, second]
    return None


def fuse_silu(model: onnx.ModelProto) -> str | None:
    """Replace Mul(x, Sigmoid(x)) by one ``Silu`` node of ``FUSED_DOMAIN`` (a model-local function)."""
    index = _GraphIndex(model)
    fused = []
    for sigmoid in [node for node in model.graph.node if node.op_type == "Sigmoid" and not node.domain]:
        multiply = index.only_consumer(sigmoid.output[0])
        if multiply is None or multiply.op_type != "Mul" or index.other_input(multiply, sigmoid.output[0]) != sigmoid.input[0]:
            continue
        new = helper.make_node("Silu", [sigmoid.input[0]], [multiply.output[0]], name=multiply.name, domain=FUSED_DOMAIN)
        fused.append(([sigmoid, multiply], new, multiply))
    if not fused:
        return None
    _replace(model, fused, _silu_function)
    return f"fused {len(fused)} x * sigmoid(x) into one SiLU node each"


def fuse_linear(model: onnx.ModelProto) -> str | None:
    """Replace MatMul(x, W) + Add(b), W a constant float32 matrix and b a constant vector of its width, by
    one ``Linear`` node of ``FUSED_DOMAIN`` (a model-local function with the same body)."""
    index = _GraphIndex(model)
    fused = []
    for matmul in [node for node in model.graph.node if node.op_type == "MatMul" and not node.domain]:
        weight = index.constants.get(matmul.input[1])
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32 or matmul.input[0] in index.constants:
            continue
        add = index.only_consumer(matmul.output[0])
        bias_name = index.other_input(add, matmul.output[0]) if add is not None and add.op_type == "Add" else None
        bias = index.constants.get(bias_name or "")
        if bias is None or bias.dtype != np.float32 or bias.shape != (weight.shape[1],):
            continue
        node = helper.make_node("Linear", [matmul.input[0], matmul.input[1], bias_name], [add.output[0]], name=add.name, domain=FUSED_DOMAIN)
        fused.append(([matmul, add], node, add))
    if not fused:
        return None
    _replace(model, fused, _linear_function)
    return f"fused {len(fused)} MatMul + bias pair(s) into one linear node each"


class _GraphIndex:
    """Lookups the fusion passes share: constants, who produces and who consumes each tensor."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
        self.producers = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {value.name for value in graph.output}

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    @staticmethod
    def other_input(node: onnx.NodeProto, known: str) -> str | None:
        if len(node.input) != 2 or known not in node.input:
            return None
        return node.input[1] if node.input[0] == known else node.input[0]

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


def _replace(model: onnx.ModelProto, fused: list, function) -> None:
    """Each (old nodes, new node, the old node it takes the place of); add the function once."""
    removed = {id(node) for nodes, _, _ in fused for node in nodes}
    at = {id(last): new for _, new, last in fused}
    kept = [at[id(node)] if id(node) in at else node for node in model.graph.node if id(node) not in removed or id(node) in at]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    if not any(opset.domain == FUSED_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
    name = fused[0][1].op_type
    if not any(existing.domain == FUSED_DOMAIN and existing.name == name for existing in model.functions):
        model.functions.append(function(opset_version(model)))
    remove_dead_nodes(model)


def _gelu_function(opset: int) -> onnx.FunctionProto:
    """Gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2))), as a model-local function in plain ONNX ops."""

    def constant(name: str, value: float) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [value]))

    nodes = [
        constant("root_two", math.sqrt(2.0)),
        constant("one", 1.0),
        constant("half", 0.5),
        helper.make_node("Div", ["x", "root_two"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["plus_one"]),
        helper.make_node("Mul", ["x", "plus_one"], ["product"]),
        helper.make_node("Mul", ["product", "half"], ["y"]),
    ]
    return helper.make_function(FUSED_DOMAIN, "Gelu", ["x"], ["y"], nodes, [helper.make_opsetid("", opset)])


def _silu_function(opset: int) -> onnx.FunctionProto:
    """Silu(x) = x * Sigmoid(x), as a model-local function."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["gate"]), helper.make_node("Mul", ["x", "gate"], ["y"])]
    return helper.make_function(FUSED_DOMAIN, "Silu", ["x"], ["y"], nodes, [helper.make_opsetid("", opset)])


def _linear_function(opset: int) -> onnx.FunctionProto:
    """Linear(x, W, b) = MatMul(x, W) + b, as a model-local function."""
    nodes = [helper.make_node("MatMul", ["x", "weight"], ["product"]), helper.make_node("Add", ["product", "bias"], ["y"])]
    return helper.make_function(FUSED_DOMAIN, "Linear", ["x", "weight", "bias"], ["y"], nodes, [helper.make_opsetid("", opset)])


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


def batch_first(model: onnx.ModelProto, axis: int | None, observed: tuple[int, ...], varying: tuple[int, ...], dynamic: bool) -> str | None:
    """Make the main output batch-first, with the shape it really has: a Transpose bringing the batch ``axis`` to
    the front (a time-major CTC recognizer's T x N x C becomes N x T x C), or an Unsqueeze adding a batch axis a
    fixed batch-1 export squeezed away (``axis`` None); the output's declared shape becomes the ``observed`` one,
    its batch axis symbolic when ``dynamic`` and the ``varying`` axes (which follow the input's size) symbolic.
    None when the output is batch-first as declared."""
    graph = model.graph
    output = graph.output[0]
    declared = tuple(d.dim_value if d.HasField("dim_value") else None for d in output.type.tensor_type.shape.dim)
    order = list(range(len(observed))) if axis is None else [axis, *(a for a in range(len(observed)) if a != axis)]
    sizes: list[int | None] = [None if a in varying else observed[a] for a in order]
    shape = (1, *sizes) if axis is None else tuple(sizes)
    if axis == 0 and len(declared) == len(observed) and all(d is None or d == o for d, o in zip(declared[1:], shape[1:])):
        return None
    shown = ["?" if size is None else size for size in shape]
    note = f"declared the main output's shape as observed, {shown}"
    if axis is None or axis != 0:
        inner = f"{output.name}__as_exported"
        for node in graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        if axis is None:
            if opset_version(model) >= 13:  # axes became an input at opset 13
                axes = numpy_helper.from_array(np.array([0], np.int64), f"{output.name}__batch_axis")
                graph.initializer.append(axes)
                unsqueeze = helper.make_node("Unsqueeze", [inner, axes.name], [output.name], name=f"{output.name}__add_batch_axis")
            else:
                unsqueeze = helper.make_node("Unsqueeze", [inner], [output.name], name=f"{output.name}__add_batch_axis", axes=[0])
            graph.node.append(unsqueeze)
            note = f"added the batch axis a fixed batch-1 export squeezed out of its output ({list(observed)} -> {shown})"
        else:
            graph.node.append(helper.make_node("Transpose", [inner], [output.name], name=f"{output.name}__batch_first", perm=order))
            note = f"moved the output's batch axis {axis} to the front ({list(observed)} -> {shown}): it was not batch-first"
    output.type.tensor_type.shape.Clear()
    for index, size in enumerate(shape):
        dim = output.type.tensor_type.shape.dim.add()
        if index == 0 and dynamic:
            dim.dim_param = "batch"
        elif size is None:
            dim.dim_param = f"size_{index}"
        else:
            dim.dim_value = int(size)
    del graph.value_info[:]
    infer_shapes(model)
    return note
