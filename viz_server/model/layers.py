"""The layer table: every node of the normalized graph with its op, output shape and kind.

Techniques address layers by ONNX node names; ``module_name`` is the matching submodule of the torch graph
(for forward hooks). The frontend also picks two defaults a user should not have to look for: the first
convolution (whose kernels are images) and the layers a class activation map may be taken at, deepest first
(``cam_candidates``). A layer qualifies as an image feature map when it is N x C x H x W with several
channels, its H and W follow the input's by a power-of-two stride (``Layer.stride``; an attention tensor
such as heads x positions x positions does not), and it is not the model's output or the head's final
activation leading to it; ``Layer.not_a_feature_map`` says why another spatial-looking layer does not
qualify. Whether the target's gradient reaches a candidate depends on the image and is settled when a map is
made (``viz_server_plugins.toolkit.cam.reached_layer``). A transformer's tokens on an image grid qualify too
(``Layer.tokens``, ``Layer.grid``: N x (class token + h*w) x D as ViT and DeiT hold them, N x h x w x C as Swin's
stages do), at a block's normalization or residual sum; the grid is found from the shape and the input's size.
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
    stride: tuple[int, int] | None = None  # input pixels per map cell (rows, columns), when H and W follow the input's
    not_a_feature_map: str = ""  # why a spatial layer cannot carry a class activation map ("" when it can)
    # an image grid held as tokens (transformers): "sequence" (N x (leading + h*w) x D, a class token first) or
    # "channels_last" (N x h x w x C, as Swin); "" for an N x C x H x W map or no grid at all
    tokens: str = ""
    grid: tuple[int, int] | None = None  # (h, w) of a token layer's grid
    leading_tokens: int = 0  # class (and distillation) tokens before the grid in a sequence

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def image_map(self) -> bool:
        """Whether the output holds an image grid: an N x C x H x W map, or tokens on a grid."""
        return self.spatial or bool(self.tokens)


@dataclass(frozen=True)
class LayerTable:
    layers: tuple[Layer, ...]
    default_cam_layer: str | None  # the deepest of ``cam_candidates``
    first_conv: str | None
    cam_candidates: tuple[str, ...] = ()  # image feature maps, deepest first
    branching_head: bool = False  # several computing layers feed the output (a detector's class and box branches)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def get(self, name: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.name == name), None)

    def passed_over(self, deeper_than: str | None = None) -> list[tuple[str, str]]:
        """(name, why) of the spatial layers deeper than ``deeper_than`` (all of them when None) that are not image
        feature maps: what a user would otherwise expect to be the default, and why it is not."""
        names = [layer.name for layer in self.layers]
        start = names.index(deeper_than) + 1 if deeper_than in names else 0
        return [(layer.name, layer.not_a_feature_map) for layer in self.layers[start:] if layer.spatial and layer.not_a_feature_map]

    def to_json(self) -> dict:
        return {
            "default_cam_layer": self.default_cam_layer,
            "first_conv": self.first_conv,
            "cam_candidates": list(self.cam_candidates),
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
    input_size = _input_size(model, shapes)
    tail = output_tail(model, folded)
    layers = []
    # a sequence of tokens is an image grid only where the model also holds that grid as a map (a patch embedding's
    # output): a recognizer's columns or a detector's anchors may count h*w tokens by chance
    grids = {
        (shape[1], shape[2]) if token_grid(shape, input_size) else tuple(shape[2:4])
        for node in model.graph.node
        if len(shape := shapes.get(node.output[0], ())) == 4
    }
    for node in model.graph.node:
        shape = shapes.get(node.output[0], ())
        kind = layer_kind(node, folded, producers)
        spatial = len(shape) == 4 and all(d is not None and d > 1 for d in shape[2:])
        weight = node.input[1] if kind in ("conv", "linear") and len(node.input) > 1 and node.input[1] in constants else None
        stride = _stride(shape, input_size) if spatial else None
        held = token_grid(shape, input_size) if stride is None else None
        if held is not None and held[0] == "sequence" and held[1] not in grids:
            held = None
        if held is not None:  # tokens on an image grid: not an N x C x H x W map, whatever its rank
            tokens, grid, leading, stride = held
            why = tail.get(node.name, "") or ("" if kind in TOKEN_KINDS else f"a {node.op_type} node inside a block, not a block's tokens")
            layers.append(Layer(node.name, node.op_type, kind, shape, module_names.get(node.name, ""), False, weight, stride, why, tokens, grid, leading))
            continue
        why = _not_a_feature_map(node, kind, shape, stride, input_size, tail) if spatial else ""
        layers.append(Layer(node.name, node.op_type, kind, shape, module_names.get(node.name, ""), spatial, weight, stride, why))
    candidates = tuple(layer.name for layer in reversed(layers) if layer.image_map and not layer.not_a_feature_map)
    heads = sum(node.name in tail and layer_kind(node, folded, producers) in COMPUTING for node in model.graph.node)
    return LayerTable(tuple(layers), candidates[0] if candidates else None, _first_conv(layers), candidates, heads > 1)


def _input_size(model: onnx.ModelProto, shapes: dict[str, tuple[int | None, ...]]) -> tuple[int, int] | None:
    """(H, W) of the image input at the size in use (NCHW; NHWC when its last axis holds 1, 3 or 4 channels)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    value = next((v for v in model.graph.input if v.name not in initializers), None)
    shape = shapes.get(value.name, ()) if value is not None else ()
    if len(shape) != 4:
        return None
    height, width = (shape[1], shape[2]) if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4) else (shape[2], shape[3])
    return (height, width) if height and width else None


def _stride(shape: tuple[int | None, ...], input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """Input pixels per cell of an N x C x h x w map, when both axes follow the input's by a power of two (within
    the rounding of padding and odd sizes); None otherwise."""
    if input_size is None:
        return None
    found = []
    for cells, pixels in zip(shape[2:], input_size):
        if not cells or cells > pixels:
            return None
        step = 2 ** round(np.log2(pixels / cells))
        if step > 128 or abs(cells - pixels / step) > 1.5:
            return None
        found.append(int(step))
    return (found[0], found[1])


PATCH_SIZES = (16, 14, 32, 8, 4)
"""Patch sizes of vision transformers, most common first (ViT/DeiT 16, DINOv2 and CLIP-L 14, Swin's stages 4-32)."""
TOKEN_KINDS = frozenset({"norm", "merge"})
"""Token layers a class activation map may be taken at: a block's normalization or its residual sum (pytorch-grad-cam
takes ViT's at the last block's first norm), not the attention or MLP internals inside a block."""


def token_grid(shape: tuple[int | None, ...], input_size: tuple[int, int] | None) -> tuple[str, tuple[int, int], int, tuple[int, int]] | None:
    """(tokens, (h, w), leading tokens, stride) when the output may hold an image grid as tokens: N x (k + h*w) x D with
    up to two leading tokens (class, distillation) and h, w (3 or more) the input's size over a patch size (the
    layer table also asks for that grid as a map somewhere in the model); or N x h x w x C
    whose h and w follow the input's by a power of two (Swin's channels-last stages). None otherwise."""
    if input_size is None or any(d is None for d in shape[1:]):
        return None
    height, width = input_size
    if len(shape) == 3 and shape[2] >= 2:
        for patch in PATCH_SIZES:
            if height % patch or width % patch:
                continue
            rows, columns = height // patch, width // patch
            leading = shape[1] - rows * columns
            if rows > 2 and columns > 2 and 0 <= leading <= 2:
                return "sequence", (rows, columns), leading, (patch, patch)
    if len(shape) == 4 and shape[3] >= 2 and shape[1] > 2 and shape[2] > 2:
        stride = _stride((shape[0], shape[3], shape[1], shape[2]), input_size)
        if stride is not None and shape[3] not in (shape[1], shape[2]):
            return "channels_last", (shape[1], shape[2]), 0, stride
    return None


COMPUTING = frozenset({"conv", "linear", "norm", "pool", "global_pool"})
"""Kinds of node that compute features from their input; every other kind rearranges, squashes or combines the
tensors it gets (reshapes, activations, concatenations, box arithmetic)."""


def output_tail(model: onnx.ModelProto, constants: dict[str, onnx.TensorProto]) -> dict[str, str]:
    """Node name -> why it is no feature map, for the model's head: the nodes between the last computing layers and
    a graph output (activations, reshapes, concatenations, box decoding) and those last computing layers
    themselves (their channels are the output's scores, so a map there only repeats the output)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    tail: dict[str, str] = {}
    waiting = [(producers[output.name], True) for output in model.graph.output if output.name in producers]
    while waiting:
        node, first = waiting.pop()
        if node.name in tail:
            continue
        computing = layer_kind(node, constants, producers) in COMPUTING
        if first:
            tail[node.name] = "the model's output"
        elif computing:
            tail[node.name] = "the head's output layer: its channels are the output's scores, so a map there only repeats the output"
        else:
            tail[node.name] = "part of the head's decoding into the output"
        if computing:
            continue
        waiting.extend((producers[name], False) for name in node.input if name and name not in constants and name in producers)
    return tail


def _not_a_feature_map(node: onnx.NodeProto, kind: str, shape, stride, input_size, tail: dict[str, str]) -> str:
    """Why a spatial layer cannot carry a class activation map, or ""."""
    if node.name in tail:
        return tail[node.name]
    if stride is None:
        size = f" at {input_size[0]} x {input_size[1]}" if input_size else ""
        return f"its axes ({shape[2]} x {shape[3]}) do not follow the input's{size} by a stride, so it is not an image map (attention or sequence axes?)"
    if shape[1] is not None and shape[1] < 2:
        return "it has one channel: a score map, not a set of features"
    if kind not in SPATIAL_KINDS:
        return f"a {node.op_type} node, not a convolutional feature map"
    return ""


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


def _first_conv(layers: list[Layer]) -> str | None:
    return next((layer.name for layer in layers if layer.kind == "conv" and layer.weight), None)
