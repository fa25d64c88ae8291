"""The layer table: every node of the normalized graph with its op, output shape and kind.

Techniques address layers by ONNX node name; ``module_name`` is the matching submodule of the torch graph
(for forward hooks). The frontend also picks two defaults a user should not have to look for: the Grad-CAM
layer (the last spatial layer before global pooling) and the first convolution (whose kernels are images).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

KIND_BY_OP = {
    "Conv": "conv",
    "ConvTranspose": "conv",
    "ConvInteger": "conv",
    "Relu": "relu",
    "LeakyRelu": "relu",
    "PRelu": "relu",
    "Gemm": "linear",
    "MatMul": "linear",
    "Linear": "linear",
    "MaxPool": "pool",
    "AveragePool": "pool",
    "GlobalAveragePool": "global_pool",
    "GlobalMaxPool": "global_pool",
    "BatchNormalization": "norm",
    "InstanceNormalization": "norm",
    "LayerNormalization": "norm",
    "GroupNormalization": "norm",
    "LRN": "norm",
    "Sigmoid": "activation",
    "Tanh": "activation",
    "HardSigmoid": "activation",
    "HardSwish": "activation",
    "Gelu": "activation",
    "Silu": "activation",
    "Elu": "activation",
    "Selu": "activation",
    "Softplus": "activation",
    "Mish": "activation",
    "Erf": "activation",
    "Add": "merge",
    "Sum": "merge",
    "Concat": "merge",
    "Mul": "merge",
    "Reshape": "shape",
    "Flatten": "shape",
    "Transpose": "shape",
    "Squeeze": "shape",
    "Unsqueeze": "shape",
    "Identity": "shape",
    "Gather": "shape",
    "Slice": "shape",
    "Split": "shape",
    "Pad": "shape",
    "Cast": "shape",
    "Softmax": "softmax",
    "LogSoftmax": "softmax",
}
SPATIAL_KINDS = frozenset({"conv", "relu", "norm", "activation", "merge", "pool"})


@dataclass(frozen=True)
class Layer:
    name: str  # ONNX node name (unique after normalization)
    op: str
    kind: str  # conv | relu | linear | pool | global_pool | norm | activation | merge | shape | softmax | other
    output_shape: tuple[int | None, ...]
    module_name: str  # submodule of the converted torch graph
    spatial: bool  # output is an N x C x H x W map with H, W > 1
    weight: str | None = None  # initializer holding the weights (conv and linear layers)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerTable:
    layers: tuple[Layer, ...]
    default_cam_layer: str | None
    first_conv: str | None

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def get(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    def to_json(self) -> dict:
        return {
            "default_cam_layer": self.default_cam_layer,
            "first_conv": self.first_conv,
            "layers": [layer.to_json() for layer in self.layers],
        }


ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div"})


def layer_kind(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto] | None = None) -> str:
    """The layer's kind. A ``Clip(0, .)`` is a rectifier (``relu``: ReLU6 and the like) unless it is the clipping
    step of a hard-swish or hard-sigmoid written out by hand (``Clip(x + 3, 0, 6)``, ``Clip(x / 6 + 0.5, 0, 1)``,
    as PaddlePaddle and old TensorFlow exports do): then it is part of a smooth-ish activation (``activation``)."""
    if node.op_type == "Clip":
        if _clip_min(node, constants) != 0.0:
            return "activation"
        producer = (producers or {}).get(node.input[0]) if node.input else None
        return "activation" if producer is not None and _shifts_by_a_scalar(producer, constants) else "relu"
    return KIND_BY_OP.get(node.op_type, "other")


def _shifts_by_a_scalar(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """An Add/Sub/Mul/Div with a one-element constant operand (the ``+ 3`` of hard-swish; a per-channel bias, many
    elements, does not count)."""
    if node.op_type not in ARITHMETIC:
        return False
    return any(name in constants and int(np.prod(constants[name].dims)) == 1 for name in node.input)


def _clip_min(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> float | None:
    for attribute in node.attribute:
        if attribute.name == "min":
            return attribute.f
    if len(node.input) > 1 and node.input[1] in constants:
        return float(numpy_helper.to_array(constants[node.input[1]]).reshape(-1)[0])
    return None


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)
    return shapes


def build_layer_table(model: onnx.ModelProto, module_names: dict[str, str], shapes: dict[str, tuple[int | None, ...]] | None = None) -> LayerTable:
    """Every node as a layer; ``shapes`` (tensor name -> shape) overrides the shapes the graph declares (for
    variable-size models, the shapes at the image size in use: ``shapes_at_size``)."""
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    folded = dict(constants)  # initializers and Constant nodes, for reading the operands of arithmetic
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            folded[node.output[0]] = node.attribute[0].t
    producers = {output: node for node in model.graph.node for output in node.output}
    shapes = {**_shapes(model), **(shapes or {})}
    layers = []
    for node in model.graph.node:
        shape = shapes.get(node.output[0], ())
        kind = layer_kind(node, folded, producers)
        spatial = len(shape) == 4 and all(d is not None and d > 1 for d in shape[2:])
        weight = node.input[1] if kind in ("conv", "linear") and len(node.input) > 1 and node.input[1] in constants else None
        layers.append(Layer(node.name, node.op_type, kind, shape, module_names.get(node.name, ""), spatial, weight))
    return LayerTable(tuple(layers), _default_cam_layer(layers), _first_conv(layers))


def incomplete(model: onnx.ModelProto) -> bool:
    """Whether some layer's declared shape has an unknown axis beyond the batch (a variable-size model)."""
    shapes = _shapes(model)
    return any(any(d is None for d in shapes.get(node.output[0], (None, None))[1:]) for node in model.graph.node)


def shapes_at_size(model: onnx.ModelProto, spec, graph=None, module_names: dict[str, str] | None = None) -> dict[str, tuple[int | None, ...]]:
    """Every tensor's shape with the input fixed at the spec's image size (batch left symbolic): ONNX shape
    inference on a copy of the graph; for outputs inference cannot settle, one probe forward of the torch
    ``graph`` at batch 1 records them."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    value = next(v for v in fixed.graph.input if v.name == spec.input_name)
    dims = value.type.tensor_type.shape.dim
    sizes = {2: spec.height, 3: spec.width} if spec.layout == "NCHW" else {1: spec.height, 2: spec.width}
    for axis, size in sizes.items():
        dims[axis].Clear()
        dims[axis].dim_value = size
    del fixed.graph.value_info[:]
    for output in fixed.graph.output:
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
        shapes = _shapes(inferred)
    except Exception:  # noqa: BLE001 - shape inference is advisory; the probe below fills what it leaves
        shapes = {}
    missing = [node for node in model.graph.node if any(d is None for d in shapes.get(node.output[0], (None, None))[1:])]
    if missing and graph is not None and module_names:
        shapes.update(_probed(graph, spec, {node.output[0]: module_names.get(node.name, "") for node in missing}))
    return shapes


def _probed(graph, spec, wanted: dict[str, str]) -> dict[str, tuple[int | None, ...]]:
    """Output shapes of the wanted submodules (tensor name -> module name) in one forward at batch 1."""
    import torch

    found: dict[str, tuple[int | None, ...]] = {}
    handles = []
    for tensor, module_name in wanted.items():
        if not module_name:
            continue

        def record(_module, _inputs, output, tensor=tensor):
            first = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(first, torch.Tensor):
                found[tensor] = (None, *first.shape[1:])

        try:
            handles.append(graph.get_submodule(module_name).register_forward_hook(record))
        except AttributeError:
            continue
    try:
        with torch.no_grad():
            graph(torch.zeros((1, *spec.input_shape)))
    except Exception:  # noqa: BLE001 - a probe that fails leaves the shapes unknown, as before
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found


def _default_cam_layer(layers: list[Layer]) -> str | None:
    """The last spatial feature map: Grad-CAM's usual choice (Selvaraju et al. 2017, sec. 3)."""
    candidates = [layer for layer in layers if layer.spatial and layer.kind in SPATIAL_KINDS]
    return candidates[-1].name if candidates else None


def _first_conv(layers: list[Layer]) -> str | None:
    return next((layer.name for layer in layers if layer.kind == "conv" and layer.weight), None)
