"""LSTM, GRU and RNN with ONNX's semantics (CRNN-style text recognizers end in a bidirectional LSTM).

ONNX packs gates differently from torch (LSTM ``iofc``, GRU ``zrh``), allows other activations, a cell clip,
peepholes, ``input_forget``, GRU's ``linear_before_reset``, per-sequence lengths and a batch-first ``layout``, so
the converted module runs the recurrence itself from the ONNX weights, one time step at a time (the input
projection of all steps at once). It is differentiable with respect to the input and to every weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
INPUTS = {
    "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
    "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
    "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
}
WITH_ALPHA = {"LeakyRelu", "ThresholdedRelu", "Elu"}
WITH_ALPHA_BETA = {"HardSigmoid", "Affine", "ScaledTanh"}


def activation(name: str, alpha: float | None, beta: float | None):
    """One of ONNX's recurrent activation functions as a torch callable."""
    simple = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu, "Softsign": F.softsign, "Softplus": F.softplus}
    if name in simple:
        return simple[name]
    if name == "LeakyRelu":
        return lambda x: F.leaky_relu(x, 0.01 if alpha is None else alpha)
    if name == "ThresholdedRelu":
        return lambda x: torch.where(x > (1.0 if alpha is None else alpha), x, torch.zeros_like(x))
    if name == "Elu":
        return lambda x: F.elu(x, 1.0 if alpha is None else alpha)
    if name == "HardSigmoid":
        return lambda x: torch.clamp((0.2 if alpha is None else alpha) * x + (0.5 if beta is None else beta), 0, 1)
    if name == "Affine":
        return lambda x: (1.0 if alpha is None else alpha) * x + (0.0 if beta is None else beta)
    if name == "ScaledTanh":
        return lambda x: (1.0 if alpha is None else alpha) * torch.tanh((1.0 if beta is None else beta) * x)
    raise NotImplementedError(f"recurrent activation {name!r} is not supported")


class Recurrent(nn.Module, OnnxToTorchModule):
    """An ONNX LSTM, GRU or RNN node. Forward arguments are the node's present inputs (named in ``present``);
    it returns the outputs the graph reads (``outputs``: Y, Y_h, Y_c)."""

    def __init__(
        self,
        kind: str,
        hidden: int,
        direction: str,
        functions: list,
        clip: float | None,
        layout: int,
        input_forget: bool,
        linear_before_reset: bool,
        present: tuple[str, ...],
        outputs: tuple[bool, ...],
    ):
        super().__init__()
        self.kind, self.hidden, self.direction, self.functions = kind, hidden, direction, functions
        self.clip, self.layout, self.input_forget, self.linear_before_reset = clip, layout, input_forget, linear_before_reset
        self.present, self.outputs = present, outputs

    def forward(self, *tensors: torch.Tensor):
        given = dict(zip(self.present, tensors))
        x = given["X"]
        if self.layout == 1:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        directions = 2 if self.direction == "bidirectional" else 1
        lengths = given.get("sequence_lens")
        lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device) if lengths is None else lengths.long().to(x.device)
        per_direction = len(self.functions) // directions
        ys, hs, cs = [], [], []
        for d in range(directions):
            reverse = self.direction == "reverse" or d == 1
            functions = self.functions[d * per_direction : (d + 1) * per_direction]
            state = self._initial(given, "initial_h", d, batch, x)
            cell = self._initial(given, "initial_c", d, batch, x) if self.kind == "LSTM" else None
            y, state, cell = self._direction(x, given, d, functions, lengths, reverse, state, cell)
            ys.append(y)
            hs.append(state)
            cs.append(cell)
        y = torch.stack(ys, dim=1)  # seq, directions, batch, hidden
        y_h = torch.stack(hs)
        y_c = torch.stack(cs) if self.kind == "LSTM" else None
        if self.layout == 1:
            y = y.permute(2, 0, 1, 3)
            y_h = y_h.transpose(0, 1)
            y_c = None if y_c is None else y_c.transpose(0, 1)
        # onnx2torch reads a multi-output node's results by their position among the node's outputs
        return y if self.outputs == 1 else (y, y_h, y_c)[: self.outputs]

    def _initial(self, given: dict, name: str, direction: int, batch: int, x: torch.Tensor) -> torch.Tensor:
        value = given.get(name)
        if value is None:
            return x.new_zeros((batch, self.hidden))
        return (value.transpose(0, 1) if self.layout == 1 else value)[direction]

    def _direction(self, x, given, d, functions, lengths, reverse, state, cell):
        steps = x.shape[0]
        time = torch.arange(steps, device=x.device)[:, None]
        valid = time < lengths[None, :]  # steps x batch
        if reverse:  # reverse each sequence within its own length
            order = torch.where(valid, lengths[None, :] - 1 - time, time)
            x = torch.gather(x, 0, order[:, :, None].expand_as(x))
        weights, recurrence = given["W"][d], given["R"][d]
        gates = GATES[self.kind]
        bias = given.get("B")
        input_bias = bias[d, : gates * self.hidden] if bias is not None else None
        recurrent_bias = bias[d, gates * self.hidden :] if bias is not None else None
        projected = F.linear(x, weights, input_bias)  # every step's input projection at once
        peepholes = given.get("P")
        outputs = []
        for t in range(steps):
            new_state, new_cell = self._step(projected[t], state, cell, recurrence, recurrent_bias, functions, None if peepholes is None else peepholes[d])
            keep = valid[t][:, None]
            state = torch.where(keep, new_state, state)
            if cell is not None:
                cell = torch.where(keep, new_cell, cell)
            outputs.append(torch.where(keep, new_state, torch.zeros_like(new_state)))
        y = torch.stack(outputs)
        if reverse:
            y = torch.gather(y, 0, order[:, :, None].expand_as(y))
        return y, state, cell

    def _clipped(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.clip is None else value.clamp(-self.clip, self.clip)

    def _step(self, xw, h, c, recurrence, recurrent_bias, functions, peepholes):
        size = self.hidden
        if self.kind == "RNN":
            return functions[0](self._clipped(xw + F.linear(h, recurrence, recurrent_bias))), None
        if self.kind == "GRU":
            z_x, r_x, h_x = xw.split(size, dim=-1)
            rb = recurrent_bias.split(size) if recurrent_bias is not None else (None, None, None)
            rz, rr, rh = recurrence.split(size, dim=0)
            z = functions[0](self._clipped(z_x + F.linear(h, rz, rb[0])))
            r = functions[0](self._clipped(r_x + F.linear(h, rr, rb[1])))
            if self.linear_before_reset:
                candidate = functions[1](self._clipped(h_x + r * F.linear(h, rh, rb[2])))
            else:
                candidate = functions[1](self._clipped(h_x + F.linear(r * h, rh, rb[2])))
            return (1 - z) * candidate + z * h, None
        pre = xw + F.linear(h, recurrence, recurrent_bias)
        i_pre, o_pre, f_pre, c_pre = pre.split(size, dim=-1)
        p_i, p_o, p_f = peepholes.split(size) if peepholes is not None else (None, None, None)
        i = functions[0](self._clipped(i_pre if p_i is None else i_pre + p_i * c))
        f = 1 - i if self.input_forget else functions[0](self._clipped(f_pre if p_f is None else f_pre + p_f * c))
        candidate = functions[1](self._clipped(c_pre))
        c_new = f * c + i * candidate
        o = functions[0](self._clipped(o_pre if p_o is None else o_pre + p_o * c_new))
        return o * functions[2](c_new), c_new


def convert_recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    kind = node.operation_type
    attrs = node.attributes
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NotImplementedError(f"{kind} direction {direction!r} is not supported")
    directions = 2 if direction == "bidirectional" else 1
    names = list(attrs.get("activations") or DEFAULT_ACTIVATIONS[kind] * directions)
    if len(names) == len(DEFAULT_ACTIVATIONS[kind]) and directions == 2:
        names = names * 2
    alphas, betas = list(attrs.get("activation_alpha") or []), list(attrs.get("activation_beta") or [])
    functions = []
    for name in names:
        alpha = alphas.pop(0) if name in WITH_ALPHA | WITH_ALPHA_BETA and alphas else None
        beta = betas.pop(0) if name in WITH_ALPHA_BETA and betas else None
        functions.append(activation(name, alpha, beta))
    inputs = list(node.input_values)
    present = tuple(name for name, value in zip(INPUTS[kind], inputs) if value)
    outputs = len(node.output_values)
    module = Recurrent(
        kind,
        int(attrs["hidden_size"]),
        direction,
        functions,
        float(attrs["clip"]) if "clip" in attrs else None,
        int(attrs.get("layout", 0)),
        bool(attrs.get("input_forget", 0)),
        bool(attrs.get("linear_before_reset", 0)),
        present,
        outputs,
    )
    used = tuple(value for value in inputs if value)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=used, outputs=node.output_values))
