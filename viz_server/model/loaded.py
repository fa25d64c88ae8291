"""``LoadedModel``: a verified, differentiable view of one ONNX image model, as techniques use it.

What a technique reads, cheapest first: ``predict`` (scores on onnxruntime, forward-only), ``predict_layers``
(inner layers' outputs on onnxruntime), ``feature_extractor`` (a differentiable torch module that stops after
the deepest layer asked for) and ``module`` (the whole differentiable graph; None for a model that runs
forward-only, ``forward_only`` saying why: only techniques with ``runs_on = "runtime"`` apply to it). ``decoder`` reads the output
for the model's task. Built by ``viz_server.model.pipeline.load_model``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, cast

import numpy as np
import onnx
import torch
from torch import fx, nn

from viz_server.errors import UserError
from viz_server.model import guard as guard_stage
from viz_server.model.device import OnDevice
from viz_server.model.layers import Layer, LayerTable
from viz_server.model.runtime import FixedBatch, inner_graph, make_session
from viz_server.model.spec import ModelSpec
from viz_server.model.truncate import LayerOutputs, cut_after
from viz_server.model.verify import ParityProbe
from viz_server.tasks import OutputDecoder


@dataclass
class ConversionReport:
    """How the model was converted and how closely the torch graph matches onnxruntime."""

    producer: str
    opset: int
    passes: list[str]
    parity: list[dict]
    max_batch: int | None  # None: any batch in one pass; N: the graph only takes batches of exactly N
    gradient_norm: float
    warnings: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)  # model_checks at this load's spec: {"check": plugin, "finding": sentence}
    output_op: str = ""  # op type computing the main output as exported (before a final Softmax was stripped)
    output_activation: str = ""  # the last op computing values before the output, through ops that only lay them out
    verified: dict[str, list[dict]] = field(default_factory=dict)  # spec.input_key (size, layout, range, normalization ...) -> parity there
    checked: dict[str, list[dict]] = field(default_factory=dict)  # spec.input_key -> model_checks findings there
    caveats: list[str] = field(default_factory=list)  # what every result on this model must say (precision, quantization)
    seconds: dict[str, float] = field(default_factory=dict)
    from_cache: bool = False
    forward_only: str = ""  # why the model has no torch graph and runs on onnxruntime only ("" when it has one)

    @property
    def worst_rel_error(self) -> float:
        return max((check["max_rel_error"] for check in self.parity), default=float("nan"))

    def to_json(self) -> dict:
        data = asdict(self)
        data["worst_rel_error"] = self.worst_rel_error
        return data


@dataclass
class LoadedModel:
    """A verified, differentiable view of one ONNX image model."""

    sha256: str
    name: str
    onnx_model: onnx.ModelProto
    module: nn.Module | None  # None when the model runs forward-only (``forward_only`` says why)
    spec: ModelSpec
    layers: LayerTable
    conversion: ConversionReport
    metadata: dict[str, str]
    decoder: OutputDecoder
    # caches built from this instance's graphs; init=False, so dataclasses.replace (the sanity check's
    # randomized copy) starts with empty ones instead of sharing the original's
    _layer_sessions: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _extractors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def session(self):
        """onnxruntime session on the normalized graph (CUDA provider when onnxruntime-gpu has one)."""
        return make_session(self.onnx_model)

    @cached_property
    def parity_probe(self) -> ParityProbe:
        """Compares this graph with onnxruntime on any batch (``verify.check_inputs``)."""
        return ParityProbe(self.onnx_model, {layer.name: layer.module_name for layer in self.layers}, self.spec.input_name)

    @property
    def max_batch(self) -> int | None:
        return self.conversion.max_batch

    def graph_changed(self) -> None:
        """Forget the onnxruntime sessions built from ``onnx_model``, after changing it in place (the sanity check's
        re-drawn initializers): the next forward pass reads the graph as it is now."""
        self.__dict__.pop("session", None)
        self._layer_sessions.clear()

    @property
    def forward_only(self) -> str:
        """Why the model runs on onnxruntime only, without a differentiable torch graph; "" when it has one."""
        return self.conversion.forward_only

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Forward-only scores for a model-space batch of any size, on onnxruntime."""
        if not len(batch):
            return np.zeros((0, self.spec.num_classes), np.float32)
        return self._run(self.session, batch, [self.onnx_model.graph.output[0].name])[0]

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """The outputs for a model-space batch: the torch graph's (differentiable), or onnxruntime's for a model that
        runs forward-only."""
        if self.module is None:
            return torch.from_numpy(self.predict(images.detach().cpu().numpy()))
        return self.module(images)

    def predict_layers(self, batch: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        """Forward-only outputs of ``layers`` (ONNX node names) for a model-space batch, on onnxruntime."""
        return self.predict_with_layers(batch, layers)[1]

    def predict_with_layers(self, batch: np.ndarray, layers: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The scores (as ``predict``) and the outputs of ``layers`` (ONNX node names), from one forward pass on
        onnxruntime: the graph is run with those layers' outputs added as graph outputs (one session per set)."""
        tensors = [self._output_tensor(name) for name in layers]
        key = tuple(tensors)
        if key not in self._layer_sessions:
            extended = onnx.ModelProto()
            extended.CopyFrom(self.onnx_model)
            known = {value.name: value for value in extended.graph.value_info}
            for tensor in tensors:
                extended.graph.output.append(known.get(tensor) or onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
            self._layer_sessions[key] = make_session(extended)
        scores, *values = self._run(self._layer_sessions[key], batch, [self.onnx_model.graph.output[0].name, *tensors])
        return scores, dict(zip(layers, values))

    def _output_tensor(self, layer: str) -> str:
        self.layer(layer)  # a clear sentence for an unknown name
        return next(node.output[0] for node in self.onnx_model.graph.node if node.name == layer)

    def _run(self, session, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """``outputs`` of ``session`` for a batch of any size (chunks of max_batch when the graph is fixed)."""
        size = self.max_batch or len(batch) or 1
        parts = []
        for start in range(0, len(batch), size):
            chunk = np.ascontiguousarray(batch[start : start + size], dtype=np.float32)
            count = len(chunk)
            if count < size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - count, axis=0)])
            parts.append([values[:count] for values in session.run(outputs, {self.spec.input_name: chunk})])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([part[index] for part in parts]) for index in range(len(outputs))]

    def decode(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """What the model says for each image of a batch of raw outputs, read by the task's decoder."""
        return self.decoder.decode(np.asarray(outputs), self.spec)

    def layer(self, name: str) -> Layer:
        """The layer with this ONNX node name, or a sentence naming a few real ones."""
        found = self.layers.get(name)
        if found is None:
            examples = ", ".join(layer.name for layer in self.layers if layer.spatial)[:200]
            raise UserError(f"the model has no layer named '{name}'; pick one from `viz-server inspect` (e.g. {examples}).")
        return found

    def torch_graph(self) -> fx.GraphModule:
        """The differentiable graph itself (inside a fixed-batch wrapper, when there is one); one sentence for a model
        that runs forward-only."""
        if self.module is None:
            raise UserError(f"{self.name} runs forward-only on onnxruntime ({self.forward_only}); this needs its differentiable graph.")
        return cast(fx.GraphModule, inner_graph(self.module))

    @property
    def device(self) -> torch.device:
        """Where the torch graph computes (``--device``, ``VIZ_SERVER_DEVICE``); it takes and returns tensors on the
        CPU wherever that is."""
        return self.module.device if isinstance(self.module, OnDevice) else torch.device("cpu")

    def submodule(self, name: str) -> nn.Module:
        """The torch submodule computing the ONNX node ``name`` (attach forward hooks here)."""
        return self.torch_graph().get_submodule(self.layer(name).module_name)

    def feature_extractor(self, layers: list[str]) -> LayerOutputs:
        """A module: model-space batch -> {layer: output} for ``layers`` (ONNX node names), running the graph only
        as far as the deepest of them (differentiable; see ``truncate``)."""
        key = tuple(layers)
        if key not in self._extractors:
            cut = cut_after(self.torch_graph(), [self.layer(name).module_name for name in layers])
            inner = self.module.graph if isinstance(self.module, OnDevice) else self.module
            wrapped = FixedBatch(cut, inner.size) if isinstance(inner, FixedBatch) else cut
            self._extractors[key] = LayerOutputs(layers, OnDevice(wrapped, self.device) if isinstance(self.module, OnDevice) else wrapped)
        return self._extractors[key]

    def describe(self) -> dict[str, Any]:
        """Everything `viz-server inspect` shows, as JSON-ready data."""
        graph = self.onnx_model.graph
        return {
            "name": self.name,
            "sha256": self.sha256,
            "inputs": [_value_json(value) for value in guard_stage.image_inputs(self.onnx_model)],
            "outputs": [_value_json(value) for value in graph.output],
            "spec": self.spec.to_json(),
            "decoder": self.decoder.describe(),
            "conversion": self.conversion.to_json(),
            "layers": self.layers.to_json(),
            "metadata": self.metadata,
        }


def _value_json(value: onnx.ValueInfoProto) -> dict:
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]
    return {"name": value.name, "shape": dims}
