"""Tiny models that declare enormous work are refused from their graph, before anything runs them: each of these
drove a job process past 4.5 GB within seconds (or held a job slot for minutes) when it was only tried."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from viz_server.errors import UserError
from viz_server.model.cost import MAX_NODES, check_budget, estimate

BUDGET = 2 * 2**30


def graph_model(nodes, output_shape, initializers=(), input_shape=(1, 3, 64, 64)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def const(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)


def constant_of_shape():
    return graph_model(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"])], [100_000, 3, 64, 64], [const("shape", np.array([100_000, 3, 64, 64], np.int64))]
    )


def expand():
    return graph_model([helper.make_node("Expand", ["x", "shape"], ["y"])], [100_000, 3, 64, 64], [const("shape", np.array([100_000, 3, 64, 64], np.int64))])


def million_channels():
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=numpy_helper.from_array(np.array([0.01], np.float32))),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    return graph_model(nodes, [1, 1_000_000, 64, 64], [const("wshape", np.array([1_000_000, 3, 1, 1], np.int64))])


def outer_product():
    nodes = [
        helper.make_node("Reshape", ["x", "column"], ["a"]),
        helper.make_node("Reshape", ["x", "row"], ["b"]),
        helper.make_node("MatMul", ["a", "b"], ["y"]),
    ]
    side = 3 * 224 * 224
    shapes = [const("column", np.array([side, 1], np.int64)), const("row", np.array([1, side], np.int64))]
    return graph_model(nodes, [side, side], shapes, input_shape=(1, 3, 224, 224))


def huge_kernel():
    weight = numpy_helper.from_array(np.zeros((64, 16, 63, 63), np.float32), "w")  # 16 MB of weights, 64 MB of input
    return graph_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[31, 31, 31, 31])], [1, 64, 1024, 1024], [weight], input_shape=(1, 16, 1024, 1024))


def relu_chain():
    names = ["x", *(f"r{index}" for index in range(MAX_NODES))] + ["y"]
    nodes = [helper.make_node("Relu", [names[index]], [names[index + 1]]) for index in range(MAX_NODES + 1)]
    return graph_model(nodes, [1, 3, 64, 64])


@pytest.mark.parametrize(
    "build,fragment",
    [
        (constant_of_shape, r"MiB \(its weights and its largest tensors"),
        (expand, r"MiB \(its weights and its largest tensors"),
        (million_channels, r"MiB \(its weights and its largest tensors"),
        (outer_product, r"MiB \(its weights and its largest tensors"),
        (huge_kernel, "multiply-adds"),
        (relu_chain, "nodes, more than"),
    ],
    ids=["ConstantOfShape", "Expand", "million-channel Conv", "outer-product MatMul", "63x63 kernel", "100,000 Relus"],
)
def test_a_model_that_declares_enormous_work_is_refused_in_one_sentence(build, fragment):
    model = build()
    with pytest.raises(UserError, match=fragment) as refused:
        check_budget(model, BUDGET)
    assert "\n" not in str(refused.value) and str(refused.value).endswith("it was refused.")


def test_ordinary_models_are_within_any_budget():
    from viz_server_models import shipped_models

    for name, path in shipped_models().items():
        cost = check_budget(onnx.load(str(path)), 2**30)
        assert cost is not None and cost.memory < 64 * 2**20 and cost.operations < 1e10, (name, cost)


@pytest.mark.slow
def test_a_resnet50_export_is_measured_sensibly():
    import io

    import torch
    import torchvision

    buffer = io.BytesIO()
    torch.onnx.export(torchvision.models.resnet50(weights=None).eval(), (torch.zeros(1, 3, 224, 224),), buffer, dynamo=False, opset_version=17)
    cost = estimate(onnx.load_from_string(buffer.getvalue()))
    assert 90 * 2**20 < cost.weights < 110 * 2**20  # 25.6 M float parameters
    assert 3.5e9 < cost.operations < 4.5e9  # 4.1 G multiply-adds, as the literature counts them


def test_the_command_line_refuses_such_a_model_before_running_it(tmp_path):
    """`viz-server run` in one process holds the same budget as a job: exit 2, one sentence, nothing written."""
    import subprocess
    import sys

    path = tmp_path / "declares-gigabytes.onnx"
    path.write_bytes(constant_of_shape().SerializeToString())
    out = tmp_path / "out"
    for command in (["inspect", str(path)], ["run", "saliency", str(path), "--out", str(out)]):
        done = subprocess.run([sys.executable, "-m", "viz_server", *command], capture_output=True, text=True, timeout=300, env=_budget_env(256))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "more than a job's budget of 256 MiB (VIZ_SERVER_JOB_MEMORY_MB); it was refused." in done.stderr
        assert done.stderr.strip().count("\n") == 0
    assert not out.exists()


def _budget_env(megabytes: int) -> dict:
    import os

    return {**os.environ, "VIZ_SERVER_JOB_MEMORY_MB": str(megabytes)}
