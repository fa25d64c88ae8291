"""LSTM, GRU and RNN converters against onnxruntime on every attribute a real export may set: directions,
per-sequence lengths, initial states, peepholes, cell clip, GRU's linear_before_reset, batch-first layout and
non-default activations; and the input gradient exists."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from viz_server.model.convert import convert
from viz_server.model.normalize import infer_shapes

STEPS, BATCH, FEATURES, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(kind: str, *, direction="forward", lengths=False, initial=False, peepholes=False, layout=0, seed=0, **attributes) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    directions = 2 if direction == "bidirectional" else 1
    gates = GATES[kind]
    tensors = {
        "W": rng.normal(0, 0.5, (directions, gates * HIDDEN, FEATURES)),
        "R": rng.normal(0, 0.5, (directions, gates * HIDDEN, HIDDEN)),
        "B": rng.normal(0, 0.3, (directions, 2 * gates * HIDDEN)),
    }
    names = ["x", "W", "R", "B"]
    if lengths:
        tensors["sequence_lens"] = np.array([STEPS, 3, 1], np.int32)
    names.append("sequence_lens" if lengths else "")
    state_shape = (BATCH, directions, HIDDEN) if layout else (directions, BATCH, HIDDEN)
    if initial:
        tensors["initial_h"] = rng.normal(0, 0.5, state_shape)
    names.append("initial_h" if initial else "")
    if kind == "LSTM":
        if initial:
            tensors["initial_c"] = rng.normal(0, 0.5, state_shape)
        names.append("initial_c" if initial else "")
        if peepholes:
            tensors["P"] = rng.normal(0, 0.5, (directions, 3 * HIDDEN))
        names.append("P" if peepholes else "")
    while names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = helper.make_node(kind, names, outputs, hidden_size=HIDDEN, direction=direction, layout=layout, name="recurrence", **attributes)
    x_shape = [BATCH, STEPS, FEATURES] if layout else [STEPS, BATCH, FEATURES]
    initializers = [numpy_helper.from_array(v.astype(np.float32) if v.dtype == np.float64 else v, k) for k, v in tensors.items()]
    graph = helper.make_graph(
        [node],
        "recurrent",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    infer_shapes(model)
    return model


CASES = [
    ("LSTM", {}),
    ("LSTM", {"direction": "reverse", "lengths": True}),
    ("LSTM", {"direction": "bidirectional", "lengths": True, "initial": True, "peepholes": True}),
    ("LSTM", {"clip": 0.4, "peepholes": True, "input_forget": 1}),
    ("LSTM", {"layout": 1, "initial": True, "direction": "bidirectional"}),
    ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Relu"], "activation_alpha": [0.3], "activation_beta": [0.6]}),
    ("GRU", {"direction": "bidirectional", "lengths": True, "initial": True}),
    ("GRU", {"linear_before_reset": 1, "direction": "reverse", "lengths": True}),
    ("GRU", {"clip": 0.5, "initial": True}),  # ONNX's reference evaluator ignores clip for GRU; onnxruntime applies it
    ("GRU", {"layout": 1, "direction": "bidirectional"}),
    ("RNN", {"direction": "bidirectional", "initial": True, "lengths": True}),
    ("RNN", {"activations": ["Relu"]}),
]


@pytest.mark.parametrize("kind,options", CASES, ids=[f"{kind}-{'-'.join(options) or 'plain'}" for kind, options in CASES])
def test_recurrent_layers_match_onnxruntime(kind, options):
    model = recurrent_model(kind, **options)
    x = np.random.default_rng(7).normal(0, 1, [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    if options.get("layout"):  # onnxruntime refuses batch-first recurrences; ONNX's reference evaluator runs them
        expected = ReferenceEvaluator(model).run(None, {"x": x})
    else:
        expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    graph, _ = convert(model)
    inputs = torch.from_numpy(x).requires_grad_(True)
    outputs = graph(inputs)
    for got, reference in zip(outputs, expected):
        np.testing.assert_allclose(got.detach().numpy(), reference, rtol=1e-4, atol=1e-5)
    outputs[0].sum().backward()
    assert inputs.grad is not None and float(inputs.grad.abs().sum()) > 0
