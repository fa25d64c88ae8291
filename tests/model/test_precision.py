"""Half-precision and quantized models: converted, verified against onnxruntime on the original, and every
result says what the analysis graph is (float32 for half precision; the float surrogate's gradient for
quantized arithmetic)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from viz_server import load_model
from viz_server.runner import run_technique
from viz_server_models import shipped_models

CHECKS_OFF = {"sanity_check": False, "faithfulness": False}


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return onnx.load(str(shipped_models()["shapes_cnn"]))


@pytest.fixture(scope="module")
def pictures(shape_pictures):
    return [(name, data) for name, data, _, _ in shape_pictures][:2]


def calibration(model: onnx.ModelProto, count: int = 8):
    from onnxruntime.quantization import CalibrationDataReader

    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{name: rng.random(shape, dtype=np.float32)} for _ in range(count)])

        def get_next(self):
            return next(self.items, None)

    return Reader()


def quantized(float_model, tmp_path, *, per_channel=False, fmt="QDQ", dynamic=False) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    source, target = tmp_path / "float.onnx", tmp_path / "quantized.onnx"
    onnx.save(float_model, source)
    if dynamic:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    else:
        quantize_static(
            str(source),
            str(target),
            calibration(float_model),
            quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if fmt == "QDQ" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return target.read_bytes()


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_a_qdq_int8_model_converts_exactly_and_says_its_gradient_is_a_surrogate(float_model, tmp_path, pictures, per_channel):
    model = load_model(quantized(float_model, tmp_path, per_channel=per_channel), use_cache=False)
    assert model.conversion.worst_rel_error <= 1e-5  # the quantize/dequantize arithmetic, reproduced
    caveat = next(c for c in model.conversion.caveats if c.startswith("Quantized model"))
    steps = float(caveat.split("differs from onnxruntime's fused integer kernels by ")[1].split(" output quantization steps")[0])
    # onnxruntime's fused integer kernels accumulate exactly and requantize with one multiplier, so they round a
    # few intermediate values the other way: the outputs move by a few quantization steps at most
    assert steps <= 4.0, caveat
    assert model.conversion.gradient_norm > 0
    result = run_technique("saliency", model, pictures, CHECKS_OFF)
    assert result.caveats[0] == caveat and "straight through" in caveat and result.metrics["usable_maps"] == [True, True]


def test_a_dynamically_quantized_model_runs_each_image_on_its_own(float_model, tmp_path):
    model = load_model(quantized(float_model, tmp_path, dynamic=True), use_cache=False)
    assert model.conversion.worst_rel_error <= 1e-5 and model.max_batch == 1
    assert any("ConvInteger" in caveat and "DynamicQuantizeLinear" in caveat for caveat in model.conversion.caveats)


def test_a_quantized_model_in_operator_format_with_contrib_ops_runs_forward_only_with_the_way_out(float_model, tmp_path):
    model = load_model(quantized(float_model, tmp_path, fmt="QOperator"), use_cache=False)
    assert model.module is None and re.search(r"com\.microsoft\.\w+ .*QDQ format", model.forward_only)


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["float16_input", "float32_input"])
def test_a_float16_model_is_analysed_in_float32_against_its_original(float_model, pictures, keep_io_types):
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(float_model, keep_io_types=keep_io_types)
    model = load_model(half.SerializeToString(), use_cache=False)
    assert model.conversion.worst_rel_error < 2e-2
    assert any(note.startswith("computes the float16 graph in float32") for note in model.conversion.passes)
    caveat = model.conversion.caveats[0]
    assert caveat.startswith("The model computes in float16; viz-server analyses it in float32")
    result = run_technique("gradcam", model, pictures, CHECKS_OFF)
    assert result.caveats[0] == caveat


def test_a_bfloat16_model_is_analysed_in_float32(float_model):
    """Weights stored in bfloat16 and cast up where used (how mixed-precision exports keep them)."""
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    graph = model.graph
    casts = []
    for index, tensor in enumerate(list(graph.initializer)):
        name, values = tensor.name, numpy_helper.to_array(tensor).astype(np.float32)
        bf16 = helper.make_tensor(name + "_bf16", TensorProto.BFLOAT16, values.shape, values.reshape(-1).tolist())
        graph.initializer[index].CopyFrom(bf16)
        casts.append(helper.make_node("Cast", [name + "_bf16"], [name], to=TensorProto.FLOAT, name=f"upcast_{index}"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    loaded = load_model(model.SerializeToString(), use_cache=False)
    assert any("bfloat16" in caveat for caveat in loaded.conversion.caveats)
    assert loaded.conversion.worst_rel_error < 6e-2
