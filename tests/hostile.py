"""The hostile set: untrusted models and images, generated so nothing binary needs to be committed.

``hostile_models()`` and ``hostile_images()`` map a file name to (bytes, expectation); "forward-only: FRAGMENT"
means the model loads without a torch graph, FRAGMENT in the reason; otherwise expectation is
``"ok"`` (an odd but valid input that must give a correct result) or a fragment of the one-sentence error.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_model(weight: np.ndarray | None = None, node_name: str = "conv", input_shape=(1, 3, 8, 8)) -> onnx.ModelProto:
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32) if weight is None else weight
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name=node_name, pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], 4])],
        [numpy_helper.from_array(weight, "w")],
    )


def valid_model_bytes() -> bytes:
    return _conv_model().SerializeToString()


def hostile_models() -> dict[str, tuple[bytes, str]]:
    valid = valid_model_bytes()
    cases: dict[str, tuple[bytes, str]] = {
        "empty.onnx": (b"", "empty"),
        "truncated.onnx": (valid[: len(valid) // 2], "not an ONNX model"),
        "random.onnx": (np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "ONNX model"),
        "html.onnx": (b"<html><body><script>alert(1)</script></body></html>", "ONNX model"),
    }

    external = _conv_model()
    tensor = external.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    cases["external_data.onnx"] = (external.SerializeToString(), "external file")

    markup = _conv_model(node_name="<script>alert('x')</script><b>conv</b>")
    cases["markup_names.onnx"] = (markup.SerializeToString(), "ok")

    cases["absurd_size.onnx"] = (_conv_model(input_shape=(1, 3, 100000, 100000)).SerializeToString(), "allowed per image")

    nan_weights = np.full((4, 3, 3, 3), np.nan, np.float32)
    cases["nan_weights.onnx"] = (_conv_model(weight=nan_weights).SerializeToString(), "NaN")

    tabular = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.ones((10, 2), np.float32), "w")],
    )
    cases["non_image.onnx"] = (tabular.SerializeToString(), "image models")

    custom = _conv_model()
    custom.graph.node[1].domain = "com.example"
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    cases["custom_op.onnx"] = (custom.SerializeToString(), "GlobalAveragePool")

    lstm = _model(
        [
            helper.make_node("Reshape", ["x", "seq_shape"], ["seq"], name="to_sequence"),
            helper.make_node("LSTM", ["seq", "W", "R"], ["", "h"], hidden_size=4, name="lstm"),
            helper.make_node("Reshape", ["h", "out_shape"], ["y"], name="flatten"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [
            numpy_helper.from_array(np.array([24, 1, 8], np.int64), "seq_shape"),
            numpy_helper.from_array(np.zeros((1, 16, 8), np.float32), "W"),
            numpy_helper.from_array(np.zeros((1, 16, 4), np.float32), "R"),
            numpy_helper.from_array(np.array([1, 4], np.int64), "out_shape"),
        ],
    )
    cases["lstm.onnx"] = (lstm.SerializeToString(), "ok")  # converted since LSTM/GRU/RNN have converters

    fourier = _model(
        [
            helper.make_node("Reshape", ["x", "seq_shape"], ["seq"], name="to_sequence"),
            helper.make_node("DFT", ["seq"], ["spectrum"], name="dft"),
            helper.make_node("Reshape", ["spectrum", "out_shape"], ["y"], name="flatten"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 384])],
        [
            numpy_helper.from_array(np.array([1, 192, 1], np.int64), "seq_shape"),
            numpy_helper.from_array(np.array([1, 384], np.int64), "out_shape"),
        ],
    )
    cases["fourier.onnx"] = (fourier.SerializeToString(), "forward-only: DFT")  # onnxruntime runs it; no converter does

    quantized = _model(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "scale", "zero"], name="quantize"),
            helper.make_node("ConvInteger", ["xq", "wq", "zero"], ["c"], name="conv"),
            helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("GlobalAveragePool", ["cf"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.uint8), "wq")],
    )
    cases["quantized.onnx"] = (quantized.SerializeToString(), "ok")  # dynamic quantization converts (fake-quantized)

    contrib = _model(
        [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"], name="quantize"),
            helper.make_node("QLinearSigmoid", ["xq", "scale", "zero", "scale", "zero"], ["yq"], name="sigmoid", domain="com.microsoft"),
            helper.make_node("DequantizeLinear", ["yq", "scale", "zero"], ["d"], name="dequantize"),
            helper.make_node("GlobalAveragePool", ["d"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.array(0.01, np.float32), "scale"), numpy_helper.from_array(np.array(128, np.uint8), "zero")],
    )
    contrib.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    cases["contrib_quantized.onnx"] = (contrib.SerializeToString(), "forward-only: quantized ops viz-server cannot convert (com.microsoft.QLinearSigmoid")

    two_inputs = _conv_model()
    two_inputs.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 3, 8, 8]))
    cases["two_inputs.onnx"] = (two_inputs.SerializeToString(), "2 inputs")
    return cases


# ---- images --------------------------------------------------------------------------------------


def _encode(picture: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's signature)."""
    data = _encode(Image.new("L", (1, 1)))
    ihdr = data[8:33]
    body = ihdr[8:21]
    body = struct.pack(">II", width, height) + body[8:]
    chunk = ihdr[:8] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[:8] + chunk + data[33:]


def hostile_images() -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    valid = _encode(Image.fromarray(rgb))
    sixteen = Image.fromarray((rng.integers(0, 65536, (20, 20))).astype(np.uint16))
    return {
        "empty.png": (b"", "empty"),
        "truncated.png": (valid[: len(valid) // 2], "truncated"),
        "random.png": (rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(), "not a picture"),
        "html.png": (b"<!doctype html><html><script>alert(1)</script></html>", "not a picture"),
        "bomb.png": (_png_with_size(60000, 60000), "pixels"),
        "cmyk.jpg": (_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "ok"),
        "sixteen_bit.png": (_encode(sixteen), "ok"),
        "palette.png": (_encode(Image.fromarray(rgb).convert("P")), "ok"),
        "rgba.png": (_encode(Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA")), "ok"),
        "one_pixel.png": (_encode(Image.new("RGB", (1, 1), (200, 10, 10))), "ok"),
        "gif_named.png": (_encode(Image.fromarray(rgb).convert("P"), "GIF"), "ok"),
        "grayscale.png": (_encode(Image.fromarray(rgb[..., 0])), "ok"),
    }
