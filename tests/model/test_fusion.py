"""normalize.fuse_gelu and fuse_linear: the decomposed forms exporters write become one node each, and
nothing changes but speed (outputs, input gradients, layer lookups on onnxruntime)."""

import math

import numpy as np
import onnx
import pytest
import torch
from model_zoo import build, example_input, export
from onnx import TensorProto, helper, numpy_helper

from viz_server import load_model
from viz_server.model import normalize


def test_a_convnext_like_block_fuses_and_keeps_its_outputs_and_gradients():
    model = load_model(export("gelu_layernorm", "torchscript", 17), use_cache=False)
    notes = " ".join(model.conversion.passes)
    assert "fused 1 erf-form GELU" in notes and "MatMul + bias" in notes
    ops = [layer.op for layer in model.layers]
    assert "Gelu" in ops and "Linear" in ops and "Erf" not in ops
    assert model.conversion.worst_rel_error < 1e-5

    native = build("gelu_layernorm")
    batch = torch.cat([example_input("gelu_layernorm") for _ in range(3)])
    ours_input, native_input = batch.clone().requires_grad_(True), batch.clone().requires_grad_(True)
    model.module(ours_input)[:, 1].sum().backward()
    native(native_input)[:, 1].sum().backward()
    np.testing.assert_allclose(ours_input.grad.numpy(), native_input.grad.numpy(), rtol=1e-4, atol=1e-6)

    # a fused layer is still a layer on both engines: the torch graph and onnxruntime agree on its output
    gelu = next(layer.name for layer in model.layers if layer.op == "Gelu")
    on_torch = model.feature_extractor([gelu])(batch)[gelu].detach().numpy()
    on_onnxruntime = model.predict_layers(batch.numpy(), [gelu])[gelu]
    np.testing.assert_allclose(on_torch, on_onnxruntime, rtol=1e-4, atol=1e-5)


def _gelu_graph(order: str, half: float = 0.5, root: float = math.sqrt(2.0)) -> onnx.ModelProto:
    """x -> GELU in one of the orders exporters write -> y, as a hand-written opset-17 graph."""
    constants = [
        numpy_helper.from_array(np.array(value, np.float32), name) for name, value in (("root", root), ("inverse_root", 1 / root), ("one", 1.0), ("half", half))
    ]
    scale = helper.make_node("Div", ["x", "root"], ["s"]) if order != "keras" else helper.make_node("Mul", ["inverse_root", "x"], ["s"])
    nodes = [scale, helper.make_node("Erf", ["s"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"])]
    if order == "torch":  # (x * a) * 0.5
        nodes += [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    elif order == "keras":  # (x * 0.5) * a
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "a"], ["y"])]
    else:  # x * (a * 0.5)
        nodes += [helper.make_node("Mul", ["a", "half"], ["h"]), helper.make_node("Mul", ["x", "h"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        constants,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("order", ["torch", "keras", "halved_first"])
def test_every_gelu_order_fuses_into_one_node(order):
    model = _gelu_graph(order)
    assert normalize.fuse_gelu(model) == "fused 1 erf-form GELU(s) into one node each"
    assert [(node.op_type, node.domain) for node in model.graph.node] == [("Gelu", normalize.FUSED_DOMAIN)]
    assert model.graph.node[0].output[0] == "y"

    import onnxruntime

    x = np.linspace(-3, 3, 10, dtype=np.float32).reshape(2, 5)
    fused = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    exact = np.asarray([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()], np.float32).reshape(2, 5)
    np.testing.assert_allclose(fused, exact, rtol=1e-5, atol=1e-6)


def test_a_look_alike_that_is_not_gelu_is_left_alone():
    model = _gelu_graph("torch", half=0.6)
    assert normalize.fuse_gelu(model) is None
    assert [node.op_type for node in model.graph.node] == ["Div", "Erf", "Add", "Mul", "Mul"]


def test_matmul_whose_product_is_used_twice_is_not_fused():
    weight = numpy_helper.from_array(np.ones((5, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.ones(3, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "b"], ["q"]), helper.make_node("Mul", ["p", "q"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 3])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert normalize.fuse_linear(model) is None


def test_silu_fuses_into_one_node_with_the_same_outputs():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    graph = helper.make_graph(
        nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert normalize.fuse_silu(model) == "fused 1 x * sigmoid(x) into one SiLU node each"
    assert [(node.op_type, node.domain) for node in model.graph.node] == [("Silu", normalize.FUSED_DOMAIN)]

    import onnxruntime

    x = np.linspace(-4, 4, 10, dtype=np.float32).reshape(2, 5)
    fused = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(fused, x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)
    converted = load_model(_silu_image_model(), use_cache=False)
    assert "SiLU" in " ".join(converted.conversion.passes) and converted.conversion.worst_rel_error < 1e-5
    assert any(layer.op == "Silu" and layer.kind == "activation" for layer in converted.layers)


def _silu_image_model() -> bytes:
    import io

    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SiLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        network,
        (torch.rand(1, 3, 16, 16),),
        buffer,
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    return buffer.getvalue()
