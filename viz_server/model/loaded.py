"""``load_model``: ONNX bytes -> guard -> normalize -> convert -> verify -> ``LoadedModel``.

Converted graphs are cached by content hash: in memory for the life of the process, and on disk (the
normalized ONNX graph and its conversion report) so a second load of the same bytes skips guard, normalize
and verify.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from viz_server.errors import UserError
from viz_server.model import guard as guard_stage
from viz_server.model import normalize as normalize_stage
from viz_server.model import verify as verify_stage
from viz_server.model.convert import convert
from viz_server.model.layers import Layer, LayerTable, build_layer_table
from viz_server.model.spec import ModelSpec, build_spec, read_sidecar
from viz_server.model.truncate import LayerOutputs, cut_after

CACHE_FORMAT = "2"
MEMORY_CACHE_SIZE = 8


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
    seconds: dict[str, float] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def worst_rel_error(self) -> float:
        return max((check["max_rel_error"] for check in self.parity), default=float("nan"))

    def to_json(self) -> dict:
        data = asdict(self)
        data["worst_rel_error"] = self.worst_rel_error
        return data


class FixedBatch(nn.Module):
    """Runs a graph that only accepts batches of exactly ``size`` on any batch, ``size`` images at a time.

    The graph may return one tensor or a tuple of them (a graph cut after several layers)."""

    def __init__(self, graph: nn.Module, size: int):
        super().__init__()
        self.graph, self.size = graph, size

    def forward(self, x: torch.Tensor):
        chunks = []
        for chunk in x.split(self.size):
            count = chunk.shape[0]
            if count < self.size:  # pad the last chunk by repeating its final image
                chunk = torch.cat([chunk, chunk[-1:].expand(self.size - count, *chunk.shape[1:])])
            output = self.graph(chunk)
            chunks.append([part[:count] for part in output] if isinstance(output, tuple) else output[:count])
        if isinstance(chunks[0], list):
            return tuple(torch.cat(parts) for parts in zip(*chunks))
        return torch.cat(chunks)


@dataclass
class _Converted:
    """What the caches keep: everything that does not depend on the user's spec overrides."""

    onnx_model: onnx.ModelProto
    graph: nn.Module
    module_names: dict[str, str]
    report: ConversionReport
    metadata: dict[str, str]


@dataclass
class LoadedModel:
    """A verified, differentiable view of one ONNX image model."""

    sha256: str
    name: str
    onnx_model: onnx.ModelProto
    module: nn.Module
    spec: ModelSpec
    layers: LayerTable
    conversion: ConversionReport
    metadata: dict[str, str]
    # caches built from this instance's graphs; init=False, so dataclasses.replace (the sanity check's
    # randomized copy) starts with empty ones instead of sharing the original's
    _layer_sessions: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _extractors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def session(self):
        """onnxruntime session on the normalized graph (CUDA provider when onnxruntime-gpu has one)."""
        return make_session(self.onnx_model)

    @property
    def max_batch(self) -> int | None:
        return self.conversion.max_batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Forward-only scores for a model-space batch of any size, on onnxruntime."""
        if not len(batch):
            return np.zeros((0, self.spec.num_classes), np.float32)
        return self._run(self.session, batch, [self.onnx_model.graph.output[0].name])[0]

    def predict_layers(self, batch: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        """Forward-only outputs of ``layers`` (ONNX node names) for a model-space batch, on onnxruntime.

        The graph is run with those layers' outputs added as graph outputs (one session per set of layers)."""
        tensors = [self._output_tensor(name) for name in layers]
        key = tuple(tensors)
        if key not in self._layer_sessions:
            extended = onnx.ModelProto()
            extended.CopyFrom(self.onnx_model)
            known = {value.name: value for value in extended.graph.value_info}
            for tensor in tensors:
                extended.graph.output.append(known.get(tensor) or onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
            self._layer_sessions[key] = make_session(extended)
        return dict(zip(layers, self._run(self._layer_sessions[key], batch, tensors)))

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
        return [np.concatenate([part[index] for part in parts]) for index in range(len(outputs))]

    def layer(self, name: str) -> Layer:
        """The layer with this ONNX node name, or a sentence naming a few real ones."""
        found = self.layers.get(name)
        if found is None:
            examples = ", ".join(layer.name for layer in self.layers if layer.spatial)[:200]
            raise UserError(f"the model has no layer named '{name}'; pick one from `viz-server inspect` (e.g. {examples}).")
        return found

    def submodule(self, name: str) -> nn.Module:
        """The torch submodule computing the ONNX node ``name`` (attach forward hooks here)."""
        graph = self.module.graph if isinstance(self.module, FixedBatch) else self.module
        return graph.get_submodule(self.layer(name).module_name)

    def feature_extractor(self, layers: list[str]) -> LayerOutputs:
        """A module: model-space batch -> {layer: output} for ``layers`` (ONNX node names), running the graph only
        as far as the deepest of them (differentiable; see ``truncate``)."""
        key = tuple(layers)
        if key not in self._extractors:
            graph = self.module.graph if isinstance(self.module, FixedBatch) else self.module
            cut = cut_after(graph, [self.layer(name).module_name for name in layers])
            self._extractors[key] = LayerOutputs(layers, FixedBatch(cut, self.module.size) if isinstance(self.module, FixedBatch) else cut)
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
            "conversion": self.conversion.to_json(),
            "layers": self.layers.to_json(),
            "metadata": self.metadata,
        }


def _value_json(value: onnx.ValueInfoProto) -> dict:
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]
    return {"name": value.name, "shape": dims}


def make_session(model: onnx.ModelProto):
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors surface as exceptions, turned into one sentence
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot run this model ({str(exc).splitlines()[0][:200]}); re-export it.") from None


# ---- loading -----------------------------------------------------------------------------------------

_memory: OrderedDict[str, _Converted] = OrderedDict()
_memory_lock = threading.Lock()


def default_cache_dir() -> Path:
    configured = os.environ.get("VIZ_SERVER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "viz-server" / "models"


def read_model_bytes(source: str | os.PathLike | bytes, max_bytes: int = guard_stage.MAX_MODEL_BYTES) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"no model file at {path}; give the path of an exported .onnx file.")
    if path.stat().st_size > max_bytes:
        raise UserError(f"{path.name} is {path.stat().st_size / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB allowed.")
    return path.read_bytes()


def load_model(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    spec_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    **spec_overrides: Any,
) -> LoadedModel:
    """Load any exported ONNX image model as a verified, differentiable torch graph.

    ``spec_overrides`` may set ``layout``, ``value_range``, ``mean``, ``std``, ``labels``, ``channel_order``
    and ``image_size``; ``spec_file`` names a JSON or TOML file with the same fields.
    """
    data = read_model_bytes(source)
    digest = hashlib.sha256(data).hexdigest()
    if name is None:
        name = Path(source).stem if not isinstance(source, (bytes, bytearray, memoryview)) else digest[:12]
    overrides = dict(read_sidecar(spec_file)) if spec_file else {}
    overrides.update({key: value for key, value in spec_overrides.items() if value is not None})

    converted = _cached(digest, Path(cache_dir) if cache_dir else default_cache_dir(), use_cache)
    if converted is None:
        converted = _convert_fresh(data, overrides)
        if use_cache:
            _remember(digest, converted, Path(cache_dir) if cache_dir else default_cache_dir())
    spec = _spec_for(converted.onnx_model, converted.metadata, overrides)
    module = converted.graph if converted.report.max_batch is None else FixedBatch(converted.graph, converted.report.max_batch)
    return LoadedModel(
        sha256=digest,
        name=name,
        onnx_model=converted.onnx_model,
        module=module,
        spec=spec,
        layers=build_layer_table(converted.onnx_model, converted.module_names),
        conversion=converted.report,
        metadata=converted.metadata,
    )


def _spec_for(model: onnx.ModelProto, metadata: dict[str, str], overrides: dict[str, Any]) -> ModelSpec:
    value = guard_stage.image_inputs(model)[0]
    dims = guard_stage.input_dims(value)
    output_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    num_classes = output_dims[1] if len(output_dims) >= 2 and output_dims[1] > 0 else 0  # the class axis
    return build_spec(value.name, dims, num_classes, metadata, overrides)


def _convert_fresh(data: bytes, overrides: dict[str, Any]) -> _Converted:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model = guard_stage.guard(data)
    seconds["guard"] = time.perf_counter() - started

    started = time.perf_counter()
    normalized, passes = normalize_stage.normalize(model)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    spec = _spec_for(normalized, metadata, overrides)
    seconds["normalize"] = time.perf_counter() - started

    started = time.perf_counter()
    graph, module_names = convert(normalized)
    seconds["convert"] = time.perf_counter() - started

    started = time.perf_counter()
    report = verify_stage.ParityReport()
    reference_session = make_session(normalized)
    fixed = _fixed_batch(normalized)
    first_batch = fixed if fixed and fixed > 1 else 1
    one = verify_stage.random_inputs(spec, first_batch, seed=0)
    two = verify_stage.random_inputs(spec, 2, seed=1)
    try:
        reference_one = reference_session.run(None, {spec.input_name: one})[0]
        reference_two = np.concatenate([reference_session.run(None, {spec.input_name: two[i : i + 1]})[0] for i in range(2)]) \
            if fixed in (None, 1) else None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot run this model on a valid input ({str(exc).splitlines()[0][:200]}); re-export it.") from None
    try:
        ours = verify_stage.torch_scores(graph, one)
    except Exception as exc:  # noqa: BLE001 - a converted graph that cannot run is a conversion failure
        raise UserError(f"the converted graph cannot run this model ({type(exc).__name__}: {str(exc)[:200]}); re-export it.") from None
    parity_one = verify_stage.compare(first_batch, ours, reference_one, f"batch {first_batch}")
    verify_stage.check_tolerance(parity_one, report)
    report.checks.append(parity_one)

    max_batch: int | None = fixed
    chosen, chosen_graph, chosen_names = normalized, graph, module_names
    if fixed is None:
        if _batch_parity(graph, two, reference_two, report) is None:
            max_batch = 1
            passes.append("the graph mixes images at batch > 1; images run one at a time")
    elif fixed == 1:
        candidate = normalize_stage.dynamic_batch(normalized)
        if candidate is not None:
            try:
                candidate_graph, candidate_names = convert(candidate)
                parity = _batch_parity(candidate_graph, two, reference_two, report)
                make_session(candidate).run(None, {spec.input_name: two})
            except Exception:  # noqa: BLE001 - any failure of the proposal means: keep the fixed batch
                parity = None
            if parity is not None:
                chosen, chosen_graph, chosen_names, max_batch = candidate, candidate_graph, candidate_names, None
                passes.append("made the fixed batch-1 input dynamic (Reshape targets copy the batch axis)")
            else:
                passes.append("the export fixes the batch to 1; images run one at a time")
    else:
        passes.append(f"the export fixes the batch to {fixed}; images run in groups of {fixed}")

    grad_input = verify_stage.random_inputs(spec, max_batch or 1, seed=2)
    report.gradient_norm = verify_stage.gradient_norm(chosen_graph, grad_input)
    if not report.gradient_norm > 0:
        report.warnings.append(
            "the scores have no usable gradient with respect to the input; gradient techniques will show blank maps."
        )
    seconds["verify"] = time.perf_counter() - started

    conversion = ConversionReport(
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opset=normalize_stage.opset_version(model),
        passes=passes,
        parity=[check.to_json() for check in report.checks],
        max_batch=max_batch,
        gradient_norm=report.gradient_norm,
        warnings=report.warnings,
        seconds={key: round(value, 4) for key, value in seconds.items()},
    )
    return _Converted(chosen, chosen_graph, chosen_names, conversion, metadata)


def _batch_parity(graph: nn.Module, batch: np.ndarray, reference: np.ndarray | None, report) -> verify_stage.Parity | None:
    """Batch-2 parity against onnxruntime run image by image; None when the graph cannot do batch 2."""
    if reference is None:
        return None
    try:
        ours = verify_stage.torch_scores(graph, batch)
        parity = verify_stage.compare(2, ours, reference, "batch 2")
    except (RuntimeError, UserError, ValueError):
        return None
    if parity.max_rel_error > verify_stage.TOLERANCE:
        return None
    verify_stage.check_tolerance(parity, report)
    report.checks.append(parity)
    return parity


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    dims = guard_stage.input_dims(guard_stage.image_inputs(model)[0])
    return dims[0]


# ---- caches --------------------------------------------------------------------------------------------

def _cached(digest: str, cache_dir: Path, use_cache: bool) -> _Converted | None:
    if not use_cache:
        return None
    with _memory_lock:
        if digest in _memory:
            _memory.move_to_end(digest)
            return _memory[digest]
    folder = cache_dir / f"{digest}-v{CACHE_FORMAT}"
    try:
        report_data = json.loads((folder / "report.json").read_text())
        onnx_model = onnx.load_from_string((folder / "normalized.onnx").read_bytes())
    except (OSError, ValueError):
        return None
    started = time.perf_counter()
    graph, module_names = convert(onnx_model)
    report = ConversionReport(**{k: v for k, v in report_data["conversion"].items() if k != "worst_rel_error"})
    report.from_cache = True
    report.seconds = {**report.seconds, "convert_cached": round(time.perf_counter() - started, 4)}
    converted = _Converted(onnx_model, graph, module_names, report, report_data["metadata"])
    _keep_in_memory(digest, converted)
    return converted


def _keep_in_memory(digest: str, converted: _Converted) -> None:
    with _memory_lock:
        _memory[digest] = converted
        while len(_memory) > MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)


def _remember(digest: str, converted: _Converted, cache_dir: Path) -> None:
    _keep_in_memory(digest, converted)
    folder = cache_dir / f"{digest}-v{CACHE_FORMAT}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"normalized.onnx.{os.getpid()}.tmp"
        temporary.write_bytes(converted.onnx_model.SerializeToString())
        temporary.replace(folder / "normalized.onnx")
        payload = {"conversion": converted.report.to_json(), "metadata": converted.metadata}
        temporary = folder / f"report.json.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(payload))
        temporary.replace(folder / "report.json")
    except OSError:
        pass  # an unwritable cache only costs speed
