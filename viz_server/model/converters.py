"""Our own onnx2torch converters for the op versions onnx2torch (pinned, unmaintained since 2024-08) lacks.

Two kinds:
- aliases: op versions whose only change is new element types (bfloat16, float8, int4 ...) reuse onnx2torch's
  newest converter for that op;
- real converters, one small module each: the opset 18+ reductions (axes as an input), Reshape with
  ``allowzero``, Pad-18+ (``axes`` input, ``wrap`` mode), Split-18 (``num_outputs``), Resize-18/19 with default
  new attributes, AveragePool-19 (dilations), Gelu-20, GlobalMaxPool, GroupNormalization, CastLike, Mish.

``register()`` is idempotent and is called by ``convert`` before every conversion. Every converted model is
then checked numerically against onnxruntime by ``verify``, so a wrong converter cannot pass silently.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from onnx import defs
from onnx2torch.node_converters import registry
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn

from viz_server.model import normalize

TYPE_ONLY_OPS = (
    "Cast", "Constant", "ConstantOfShape", "Identity", "Shape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
    "Equal", "Conv", "ConvTranspose", "MaxPool", "GlobalAveragePool", "Dropout", "Elu", "Selu", "HardSigmoid",
    "HardSwish", "InstanceNormalization", "Softplus", "Softsign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
    "Round", "IsNaN", "IsInf", "LRN", "LeakyRelu", "PRelu", "Relu", "Sigmoid", "Tanh", "Where", "Gemm", "MatMul",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Erf", "Ceil", "Floor", "Max", "Min",
    "Concat", "Gather", "Slice", "Expand", "Tile", "BatchNormalization", "Clip", "Softmax", "LogSoftmax",
    "LayerNormalization", "Sum", "Mean", "Reciprocal", "Sign", "Not", "And", "Or", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "Range", "TopK", "ArgMax", "ArgMin", "DepthToSpace", "Einsum", "CumSum",
)
REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare",
)
_registered = False


def register() -> None:
    """Add our converters and aliases to onnx2torch's registry (once per process)."""
    global _registered
    if _registered:
        return
    _registered = True
    for op, version, converter in _own_converters():
        _add(op, version, converter, replace=True)
    for op in TYPE_ONLY_OPS:
        _alias_newer_versions(op)
    for op, converter in (("Gelu", convert_gelu), ("Silu", convert_silu), ("Linear", convert_fused_linear)):
        registry._CONVERTER_REGISTRY[registry.OperationDescription(domain=normalize.FUSED_DOMAIN, operation_type=op, version=1)] = converter


@lru_cache(maxsize=1)
def _since_versions() -> dict[str, list[int]]:
    """Op type -> every ONNX version in which its schema changed (default domain)."""
    versions: dict[str, set[int]] = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain == "":
            versions.setdefault(schema.name, set()).add(schema.since_version)
    return {op: sorted(found) for op, found in versions.items()}


def _all_since_versions(op: str) -> list[int]:
    return _since_versions().get(op, [])


def _registered_versions(op: str) -> list[int]:
    return sorted(d.version for d in registry._CONVERTER_REGISTRY if d.operation_type == op and d.domain == "")


def _add(op: str, version: int, converter, replace: bool = False) -> None:
    description = registry.OperationDescription(domain="", operation_type=op, version=version)
    if replace:
        registry._CONVERTER_REGISTRY[description] = converter
    else:
        registry._CONVERTER_REGISTRY.setdefault(description, converter)


def _alias_newer_versions(op: str) -> None:
    known = _registered_versions(op)
    if not known:
        return
    newest = registry._CONVERTER_REGISTRY[registry.OperationDescription("", op, known[-1])]
    for version in _all_since_versions(op):
        if version > known[-1]:
            _add(op, version, newest)


def _own_converters():
    """(op, version, converter) for every version of an op from the first one we convert ourselves."""
    table = [(op, 18, convert_reduce_axes_input) for op in REDUCE_OPS] + [
        ("Reshape", 14, convert_reshape),
        ("Pad", 18, convert_pad),
        ("Split", 18, convert_split_18),
        ("Resize", 18, convert_resize_18),
        ("AveragePool", 19, convert_average_pool_19),
        ("Gelu", 20, convert_gelu),
        ("GlobalMaxPool", 1, convert_global_max_pool),
        ("GroupNormalization", 18, convert_group_norm_18),
        ("GroupNormalization", 21, convert_group_norm_21),
        ("CastLike", 15, convert_cast_like),
        ("Mish", 18, convert_mish),
    ]
    for op, first, converter in table:
        for version in _all_since_versions(op):
            if version >= first:
                yield op, version, converter


def _const_list(name: str, graph: OnnxGraph, what: str, node: OnnxNode) -> list[int] | None:
    if not name:
        return None
    try:
        value = get_const_value(name, graph)
    except KeyError:
        raise NotImplementedError(f"{node.operation_type} with a computed {what} input is not supported") from None
    return [int(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else list(value))]


def _rank(name: str, graph: OnnxGraph) -> int | None:
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return len(info.type.tensor_type.shape.dim)


def _mapping(node: OnnxNode, inputs: int = 1) -> OnnxMapping:
    return OnnxMapping(inputs=node.input_values[:inputs], outputs=node.output_values)


# ---- reductions with axes as an input (ReduceSum-13, every Reduce*-18) ----------------------------

class Reduce(nn.Module, OnnxToTorchModule):
    """ONNX Reduce* with static axes (None = all axes)."""

    def __init__(self, op: str, axes: list[int] | None, keepdims: bool):
        super().__init__()
        self.op, self.axes, self.keepdims = op, axes, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(x.dim())) if self.axes is None else tuple(a % x.dim() for a in self.axes)
        keep = self.keepdims
        if self.op == "ReduceMean":
            return x.mean(dims, keepdim=keep)
        if self.op == "ReduceSum":
            return x.sum(dims, keepdim=keep)
        if self.op == "ReduceMax":
            return x.amax(dims, keepdim=keep)
        if self.op == "ReduceMin":
            return x.amin(dims, keepdim=keep)
        if self.op == "ReduceSumSquare":
            return (x * x).sum(dims, keepdim=keep)
        if self.op == "ReduceL1":
            return x.abs().sum(dims, keepdim=keep)
        if self.op == "ReduceL2":
            return (x * x).sum(dims, keepdim=keep).sqrt()
        if self.op == "ReduceLogSum":
            return x.sum(dims, keepdim=keep).log()
        if self.op == "ReduceLogSumExp":
            return torch.logsumexp(x, dims, keepdim=keep)
        result = x  # ReduceProd: one axis at a time, highest first so indices stay valid
        for dim in sorted(dims, reverse=True):
            result = result.prod(dim, keepdim=keep)
        return result


class Passthrough(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def convert_reduce_axes_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    keepdims = bool(node.attributes.get("keepdims", 1))
    axes = _const_list(node.input_values[1], graph, "axes", node) if len(node.input_values) > 1 else None
    if "axes" in node.attributes:  # an old-style attribute on a model that mislabels its opset
        axes = list(node.attributes["axes"])
    if not axes:
        if node.attributes.get("noop_with_empty_axes", 0):
            return OperationConverterResult(torch_module=Passthrough(), onnx_mapping=_mapping(node))
        axes = None
    return OperationConverterResult(
        torch_module=Reduce(node.operation_type, axes, keepdims), onnx_mapping=_mapping(node)
    )


# ---- Reshape with allowzero -----------------------------------------------------------------------

def convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """allowzero=1 only differs when the target holds a 0; with a constant target without zeros it is plain."""
    if node.attributes.get("allowzero", 0) == 1:
        target = _const_list(node.input_values[1], graph, "shape", node)
        if target is None or 0 in target:
            raise NotImplementedError("Reshape with allowzero=1 and a zero-sized target is not supported")
    return OperationConverterResult(torch_module=OnnxReshape(), onnx_mapping=OnnxMapping(node.input_values, node.output_values))


# ---- Pad-18+ -----------------------------------------------------------------------------------------

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
    pads = _const_list(node.input_values[1], graph, "pads", node)
    inputs = list(node.input_values) + [""] * 4
    value = 0.0
    if inputs[2]:
        raw = get_const_value(inputs[2], graph)
        value = float(raw.reshape(-1)[0]) if isinstance(raw, torch.Tensor) and raw.numel() else float(raw or 0)
    rank = _rank(node.input_values[0], graph)
    axes = _const_list(inputs[3], graph, "axes", node) if inputs[3] else None
    if axes is not None:
        if rank is None:
            raise NotImplementedError("Pad with axes on an input of unknown rank is not supported")
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            full[axis % rank] = pads[i]
            full[rank + axis % rank] = pads[len(axes) + i]
        pads = full
    return OperationConverterResult(torch_module=Pad(pads, mode, value), onnx_mapping=_mapping(node))


# ---- Split-18 ----------------------------------------------------------------------------------------

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
    sizes = _const_list(node.input_values[1], graph, "split", node) if len(node.input_values) > 1 else None
    parts = node.attributes.get("num_outputs", len(node.output_values))
    return OperationConverterResult(
        torch_module=Split(node.attributes.get("axis", 0), sizes, parts), onnx_mapping=_mapping(node)
    )


# ---- Resize-18/19, AveragePool-19: new attributes at their defaults reuse the older converter -------------

def convert_resize_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attrs = node.attributes
    if attrs.get("antialias", 0) or attrs.get("axes") or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotImplementedError("Resize with antialias, axes or keep_aspect_ratio_policy is not supported")
    if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric":
        raise NotImplementedError("Resize with half_pixel_symmetric coordinates is not supported")
    return registry.get_converter("Resize", 13)(node, graph)


def convert_average_pool_19(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if any(d != 1 for d in node.attributes.get("dilations", [])):
        raise NotImplementedError("AveragePool with dilations is not supported")
    return registry.get_converter("AveragePool", 11)(node, graph)


# ---- new ops ---------------------------------------------------------------------------------------

class Gelu(nn.Module, OnnxToTorchModule):
    def __init__(self, approximate: str):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Gelu(node.attributes.get("approximate", "none")), onnx_mapping=_mapping(node))


class Silu(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


def convert_silu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Silu(), onnx_mapping=_mapping(node))


class FusedLinear(nn.Module, OnnxToTorchModule):
    """``normalize.fuse_linear``'s MatMul + bias as one ``F.linear``, the weight stored out x in (contiguous)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.t().contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def convert_fused_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    weight, bias = (get_const_value(name, graph) for name in node.input_values[1:3])
    return OperationConverterResult(torch_module=FusedLinear(weight, bias), onnx_mapping=_mapping(node))


class GlobalMaxPool(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=_mapping(node))


class GroupNorm(nn.Module, OnnxToTorchModule):
    """GroupNormalization; opset 18 has per-group scale/bias, opset 21 per-channel."""

    def __init__(self, groups: int, epsilon: float, per_channel: bool):
        super().__init__()
        self.groups, self.epsilon, self.per_channel = groups, epsilon, per_channel

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if not self.per_channel:
            scale = scale.repeat_interleave(channels // self.groups)
            bias = bias.repeat_interleave(channels // self.groups)
        return F.group_norm(x, self.groups, scale, bias, self.epsilon)


def _group_norm(node: OnnxNode, per_channel: bool) -> OperationConverterResult:
    module = GroupNorm(node.attributes["num_groups"], node.attributes.get("epsilon", 1e-5), per_channel)
    return OperationConverterResult(torch_module=module, onnx_mapping=_mapping(node, 3))


def convert_group_norm_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _group_norm(node, per_channel=False)


def convert_group_norm_21(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _group_norm(node, per_channel=True)


class CastLike(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)


def convert_cast_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=CastLike(), onnx_mapping=_mapping(node, 2))


class Mish(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


def convert_mish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=Mish(), onnx_mapping=_mapping(node))
