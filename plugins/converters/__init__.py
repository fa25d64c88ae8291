"""The built-in converter plugin: ONNX op versions onnx2torch (pinned, unmaintained since 2024-08) lacks.

Two kinds, each a ``viz_server.model.convert.Converter`` returned by ``register_converters``:

- version bumps whose only change is new element types (bfloat16, float8, int4 ...) reuse onnx2torch's
  newest converter for that op (``TYPE_ONLY_OPS``);
- real converters, one small module per family: reductions with axes as an input, Reshape ``allowzero``,
  Pad-18+, Split-18, CastLike (``tensors``), Resize-18/19, AveragePool-19, GlobalMaxPool (``resampling``),
  Gelu-20, Mish, Clip-11+ with absent or computed bounds (``activations``), GroupNormalization-18/21 (``normalization``).

Every converted model is checked numerically against onnxruntime by ``verify``, so a wrong converter cannot
pass silently.
"""

from __future__ import annotations

from onnx2torch.node_converters.registry import get_converter

from viz_server import hookimpl
from viz_server.model.convert import Converter, schema_versions
from viz_server_plugins.converters import activations, normalization, reductions, resampling, tensors

TYPE_ONLY_OPS = (
    "Cast",
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Shape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Equal",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "GlobalAveragePool",
    "Dropout",
    "Elu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "InstanceNormalization",
    "Softplus",
    "Softsign",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Round",
    "IsNaN",
    "IsInf",
    "LRN",
    "LeakyRelu",
    "PRelu",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Where",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Erf",
    "Ceil",
    "Floor",
    "Max",
    "Min",
    "Concat",
    "Gather",
    "Slice",
    "Expand",
    "Tile",
    "BatchNormalization",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "Sum",
    "Mean",
    "Reciprocal",
    "Sign",
    "Not",
    "And",
    "Or",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "Range",
    "TopK",
    "ArgMax",
    "ArgMin",
    "DepthToSpace",
    "Einsum",
    "CumSum",
)

OWN = [(op, 18, reductions.convert_reduce_axes_input) for op in reductions.REDUCE_OPS] + [
    ("Reshape", 14, tensors.convert_reshape),
    ("Pad", 18, tensors.convert_pad),
    ("Split", 18, tensors.convert_split_18),
    ("CastLike", 15, tensors.convert_cast_like),
    ("Resize", 18, resampling.convert_resize_18),
    ("AveragePool", 19, resampling.convert_average_pool_19),
    ("GlobalMaxPool", 1, resampling.convert_global_max_pool),
    ("Gelu", 20, activations.convert_gelu),
    ("Clip", 11, activations.convert_clip),
    ("Mish", 18, activations.convert_mish),
    ("GroupNormalization", 18, normalization.convert_group_norm_18),
    ("GroupNormalization", 21, normalization.convert_group_norm_21),
]
"""(op, first schema version, converter): each handles its op from that version on."""


def type_only_aliases() -> list[Converter]:
    """For each op of ``TYPE_ONLY_OPS``: onnx2torch's newest converter, for every later schema version."""
    aliases = []
    for op in TYPE_ONLY_OPS:
        for version in reversed(schema_versions(op)):
            try:
                newest = get_converter(op, version)
            except NotImplementedError:
                continue
            if version < schema_versions(op)[-1]:
                aliases.append(Converter(op, version + 1, newest))
            break
    return aliases


@hookimpl
def register_converters():
    return [Converter(op, since, function) for op, since, function in OWN] + type_only_aliases()


__all__ = ["OWN", "TYPE_ONLY_OPS", "register_converters", "type_only_aliases"]
