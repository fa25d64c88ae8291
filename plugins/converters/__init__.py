"""The built-in converter plugin: ONNX ops onnx2torch (pinned, unmaintained since 2024-08) lacks or gets wrong.

Two kinds, each a ``viz_server.model.convert.Converter`` returned by ``register_converters``:

- version bumps whose only change is new element types (bfloat16, float8, int4 ...) reuse onnx2torch's
  newest converter for that op (``TYPE_ONLY_OPS``);
- real converters, one small module per family: ``resampling`` (Resize and Upsample, every mode),
  ``pooling`` (Max/Average/Lp/GlobalMax pools with ONNX's window rules), ``convolution`` (Conv SAME,
  ConvTranspose), ``recurrent`` (LSTM, GRU, RNN), ``quantization`` (QDQ, dynamic and QLinear ops),
  ``normalization`` (BatchNorm at any rank, LayerNorm statistics, GroupNorm), ``layout`` (DepthToSpace,
  SpaceToDepth, Flatten), ``indexing`` (TopK, CumSum, GatherElements), ``reductions``, ``tensors`` (Reshape,
  Pad, Split, CastLike, Dropout) and ``activations``; ``windows`` holds the sliding-window geometry Conv and the
  pools share.

Every converted model is checked numerically against onnxruntime by ``verify``, and ONNX's node tests check
every converter (``tests/model/test_node_cases.py``), so a wrong converter cannot pass silently.
"""

from __future__ import annotations

from onnx2torch.node_converters.registry import get_converter

from viz_server import hookimpl
from viz_server.model.convert import Converter, schema_versions
from viz_server_plugins.converters import (
    activations,
    convolution,
    indexing,
    layout,
    normalization,
    pooling,
    quantization,
    recurrent,
    reductions,
    resampling,
    tensors,
)

TYPE_ONLY_OPS = (
    "Cast",
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Shape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Equal",
    "GlobalAveragePool",
    "Elu",
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
    "Softmax",
    "LogSoftmax",
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
    "ArgMax",
    "ArgMin",
    "Einsum",
)

OWN = [(op, 18, reductions.convert_reduce_axes_input) for op in reductions.REDUCE_OPS] + [
    ("Reshape", 14, tensors.convert_reshape),
    ("Pad", 18, tensors.convert_pad),
    ("Split", 18, tensors.convert_split_18),
    ("CastLike", 15, tensors.convert_cast_like),
    ("Dropout", 1, tensors.convert_dropout),
    ("Conv", 1, convolution.convert_conv),
    ("ConvTranspose", 1, convolution.convert_conv_transpose),
    ("MaxPool", 1, pooling.convert_max_pool),
    ("AveragePool", 1, pooling.convert_average_pool),
    ("LpPool", 1, pooling.convert_lp_pool),
    ("GlobalMaxPool", 1, pooling.convert_global_max_pool),
    ("Upsample", 7, resampling.convert_upsample_7),
    ("Upsample", 9, resampling.convert_upsample_9),
    ("Resize", 10, resampling.convert_resize_10),
    ("Resize", 11, resampling.convert_resize),
    ("GridSample", 16, resampling.convert_grid_sample),
    ("DepthToSpace", 1, layout.convert_depth_to_space),
    ("SpaceToDepth", 1, layout.convert_space_to_depth),
    ("Flatten", 1, layout.convert_flatten),
    ("TopK", 1, indexing.convert_top_k),
    ("CumSum", 11, indexing.convert_cum_sum),
    ("GatherElements", 11, indexing.convert_gather_elements),
    ("Gelu", 20, activations.convert_gelu),
    ("Clip", 11, activations.convert_clip),
    ("Mish", 18, activations.convert_mish),
    ("Selu", 1, activations.convert_selu),
    ("Celu", 12, activations.convert_celu),
    ("LSTM", 1, recurrent.convert_recurrent),
    ("GRU", 1, recurrent.convert_recurrent),
    ("RNN", 1, recurrent.convert_recurrent),
    ("QuantizeLinear", 10, quantization.convert_quantize_linear),
    ("DequantizeLinear", 10, quantization.convert_dequantize_linear),
    ("DynamicQuantizeLinear", 11, quantization.convert_dynamic_quantize_linear),
    ("ConvInteger", 10, quantization.convert_conv_integer),
    ("MatMulInteger", 10, quantization.convert_matmul_integer),
    ("QLinearConv", 10, quantization.convert_qlinear_conv),
    ("QLinearMatMul", 10, quantization.convert_qlinear_matmul),
    ("BatchNormalization", 1, normalization.convert_batch_norm),
    ("LayerNormalization", 17, normalization.convert_layer_norm),
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
