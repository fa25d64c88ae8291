"""``load_model``: ONNX bytes -> guard -> normalize -> convert -> verify -> checks -> ``LoadedModel``.

One direction, one stage per module: ``guard`` refuses what is unsafe, ``normalize`` rewrites the graph into
plain form, ``convert`` builds the torch graph, ``verify`` proves it matches onnxruntime, and the plugins'
``model_checks`` add their findings. Conversions are cached by content (``cache``); the spec (the user's
overrides) and the output decoder are settled on every load, and parity and the model checks are kept per
``spec.input_key`` (the fields that change what the model is fed), so each holds for the spec it is shown with.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from viz_server.conventions import ModelFacts, convention_for
from viz_server.errors import UserError
from viz_server.model import cache
from viz_server.model import guard as guard_stage
from viz_server.model import normalize as normalize_stage
from viz_server.model.convert import convert
from viz_server.model.cost import check_budget
from viz_server.model.device import on_device
from viz_server.model.device import resolve as resolve_device
from viz_server.model.layers import LayerTable, build_layer_table, incomplete, shapes_at_size
from viz_server.model.loaded import ConversionReport, LoadedModel
from viz_server.model.precision import model_precision
from viz_server.model.runtime import FixedBatch
from viz_server.model.spec import ModelSpec, build_spec, input_key, parse_field, read_sidecar, spec_digest, spec_metadata
from viz_server.model.verify import fixed_batch, output_batch_axis, run_on_runtime, verify, verify_spec
from viz_server.plugins import call_hook
from viz_server.tasks import OutputDecoder, OutputInfo, choose_decoder


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
    device: str | None = None,
    memory_budget: int | None = None,
    **spec_overrides: Any,
) -> LoadedModel:
    """Load any exported ONNX image model as a verified, differentiable torch graph.

    ``device`` (cpu, cuda, cuda:N, auto; None: ``VIZ_SERVER_DEVICE``) is where the torch graph computes once
    verified (``model.device``); conversion and verification run on the CPU. ``memory_budget`` (bytes) refuses, in
    one sentence, a model whose graph says one picture needs more (``cost.check_budget``), before anything runs it.

    ``spec_overrides`` may set any field of ``viz_server.model.spec.SPEC_FIELDS`` (``layout``, ``image_size``,
    ``labels``, ``task`` ...); ``spec_file`` names a JSON or TOML file with the same fields.
    """
    where = resolve_device(device)  # a GPU that is not there is one sentence before any work
    data = read_model_bytes(source)
    digest = hashlib.sha256(data).hexdigest()
    if name is None:
        name = Path(source).stem if not isinstance(source, (bytes, bytearray, memoryview)) else digest[:12]
    overrides = dict(read_sidecar(spec_file)) if spec_file else {}
    overrides.update({key: value for key, value in spec_overrides.items() if value is not None})
    folder = Path(cache_dir) if cache_dir else cache.default_cache_dir()
    key = cache.cache_key(digest)

    converted = cache.lookup(key, folder) if use_cache else None
    fresh = converted is None
    if converted is None:
        converted = _convert_fresh(data, overrides, memory_budget)
    elif memory_budget is not None:
        check_budget(converted.onnx_model, memory_budget)
    decoder, output = _decoder_for(converted.onnx_model, converted.metadata, overrides, (converted.report.output_op, converted.report.output_activation))
    spec = _spec_for(converted.onnx_model, converted.metadata, overrides, decoder, output)
    model = _loaded(digest, name, converted, spec, decoder)
    if (_settle_at(spec, converted, model) or fresh) and use_cache:
        with _settle_lock:  # the report is shared: written while no other load adds to it
            cache.remember(key, converted, folder)
    if model.module is not None:
        model.module = on_device(model.module, where)
    return model


_settle_lock = threading.Lock()


def _settle_at(spec: ModelSpec, converted: cache.Converted, model: LoadedModel) -> bool:
    """Parity at the spec in use, once per ``input_key`` (what holds at one input size, layout, range and
    normalization need not hold at another), and the model checks once per ``spec_digest`` (a check may also
    read the task or the labels); the model's report shows both for its own spec. True when something was added."""
    report = converted.report
    where, checked_at = input_key(spec), spec_digest(spec)
    added = False
    if report.forward_only:  # no graph to compare with onnxruntime
        report.verified.setdefault(where, [])
    if where not in report.verified:
        verified = verify_spec(converted.onnx_model, converted.graph, converted.module_names, spec)
        with _settle_lock:
            report.verified[where] = verified
        added = True
    if checked_at not in report.checked:
        started = time.perf_counter()
        findings = _checks(model)
        with _settle_lock:
            report.checked[checked_at] = findings
            report.seconds = {**report.seconds, "checks": round(time.perf_counter() - started, 4)}
        added = True
    model.conversion.parity = report.verified[where]
    model.conversion.findings = report.checked[checked_at]
    return added


def _loaded(digest: str, name: str, converted: cache.Converted, spec: ModelSpec, decoder: OutputDecoder) -> LoadedModel:
    """The model at ``spec``, its conversion report showing that spec's findings (a copy: the cached report is shared)."""
    max_batch = converted.report.max_batch
    return LoadedModel(
        sha256=digest,
        name=name,
        onnx_model=converted.onnx_model,
        module=converted.graph if max_batch is None or converted.graph is None else FixedBatch(converted.graph, max_batch),
        spec=spec,
        layers=_layer_table(digest, converted, spec),
        conversion=replace(converted.report, findings=converted.report.checked.get(spec_digest(spec), [])),
        metadata=converted.metadata,
        decoder=decoder,
    )


LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"})
"""Ops that only lay values out: the op that computes the output is the one before them (a time-major
recognizer's final Transpose follows its LogSoftmax)."""


def final_op(model: onnx.ModelProto, through_layout: bool = False) -> str:
    """The op type of the node computing the main output; with ``through_layout``, of the last node before it that
    computes values (looking through ops that only lay them out)."""
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers.get(model.graph.output[0].name)
    while through_layout and node is not None and node.op_type in LAYOUT_OPS and node.input and node.input[0] in producers:
        node = producers[node.input[0]]
    return node.op_type if node is not None else ""


_resolved: OrderedDict[tuple[str, int, int], dict] = OrderedDict()


def _layer_table(digest: str, converted: cache.Converted, spec: ModelSpec) -> LayerTable:
    """The layer table; for a variable-size model, with every shape resolved at the spec's image size (kept per
    model and size, so a changed size re-resolves them)."""
    if not incomplete(converted.onnx_model) or converted.graph is None:  # forward-only: the shapes the graph declares
        return build_layer_table(converted.onnx_model, converted.module_names)
    key = (digest, spec.height, spec.width)
    if key not in _resolved:
        _resolved[key] = shapes_at_size(converted.onnx_model, spec, converted.graph, converted.module_names)
        while len(_resolved) > 32:
            _resolved.popitem(last=False)
    return build_layer_table(converted.onnx_model, converted.module_names, _resolved[key])


def _output_info(model: onnx.ModelProto, metadata: dict[str, str], exported_ops: tuple[str, str]) -> OutputInfo:
    output = model.graph.output[0]
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in output.type.tensor_type.shape.dim)
    return OutputInfo(shape, spec_metadata(metadata), exported_ops[0], model.graph, exported_ops[1])


def _decoder_for(
    model: onnx.ModelProto, metadata: dict[str, str], overrides: dict[str, Any], exported_ops: tuple[str, str]
) -> tuple[OutputDecoder, OutputInfo]:
    """The task's decoder: the user's or the metadata's task when given, else whichever decoder recognises it."""
    output = _output_info(model, metadata, exported_ops)
    raw = overrides.get("task") or output.metadata.get("task")
    return choose_decoder(output, parse_field("task", raw) if raw else None), output


def _spec_for(
    model: onnx.ModelProto, metadata: dict[str, str], overrides: dict[str, Any], decoder: OutputDecoder, output: OutputInfo, count_classes: bool = True
) -> ModelSpec:
    """The spec; ``count_classes=False`` for a spec that only feeds probes (labels are not checked against a class
    count read from a declared output shape that may be wrong)."""
    value = guard_stage.image_inputs(model)[0]
    dims = guard_stage.input_dims(value)
    task_given = bool(overrides.get("task") or output.metadata.get("task"))
    convention = convention_for(model_facts(model, metadata, dims, decoder.task))
    classes = (decoder.class_count(output) or 0) if count_classes else 0
    return build_spec(value.name, dims, classes, metadata, overrides, task=decoder.task, task_guessed=not task_given, convention=convention)


def model_facts(model: onnx.ModelProto, metadata: dict[str, str], dims: list[int | None], task: str) -> ModelFacts:
    """What input conventions may look at (``viz_server.conventions``)."""
    values = [*model.graph.input, *model.graph.output]
    dim_names = tuple(dim.dim_param for value in values for dim in value.type.tensor_type.shape.dim if dim.dim_param)
    return ModelFacts(model.producer_name, dict(metadata), tuple(dims), dim_names, tuple(node.name for node in model.graph.node), task)


def _convert_fresh(data: bytes, overrides: dict[str, Any], memory_budget: int | None = None) -> cache.Converted:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model = guard_stage.guard(data)
    if memory_budget is not None:
        check_budget(model, memory_budget)
    seconds["guard"] = time.perf_counter() - started

    started = time.perf_counter()
    normalized, passes = normalize_stage.normalize(model)
    kind = model_precision(model)
    original = normalize_stage.normalize(model, in_float32=False)[0] if kind else None
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    exported_ops = (final_op(model), final_op(model, through_layout=True))
    decoder, output = _decoder_for(normalized, metadata, overrides, exported_ops)
    found = output_batch_axis(normalized, _spec_for(normalized, metadata, overrides, decoder, output, count_classes=False))
    if found is not None:  # the output as onnxruntime returns it, made batch-first
        note = normalize_stage.batch_first(normalized, *found, dynamic=fixed_batch(normalized) is None)
        if note:
            passes.append(note)
            if original is not None:
                normalize_stage.batch_first(original, *found, dynamic=fixed_batch(original) is None)
            decoder, output = _decoder_for(normalized, metadata, overrides, exported_ops)
    spec = _spec_for(normalized, metadata, overrides, decoder, output)
    seconds["normalize"] = time.perf_counter() - started

    started = time.perf_counter()
    why_not = guard_stage.control_flow(normalized.graph)
    try:
        graph, module_names = convert(normalized) if not why_not else (None, {})
    except UserError as refusal:  # an op nobody converts (or quantized operators): onnxruntime may still run it
        why_not = str(refusal).rstrip(".")
    seconds["convert"] = time.perf_counter() - started
    if why_not:
        return _forward_only(model, normalized, passes, metadata, exported_ops, spec, decoder, why_not, seconds)

    started = time.perf_counter()
    verified = verify(normalized, graph, module_names, spec, original, kind)
    seconds["verify"] = time.perf_counter() - started

    report = ConversionReport(
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opset=normalize_stage.opset_version(model),
        passes=passes + verified.notes,
        parity=[check.to_json() for check in verified.parity.checks],
        max_batch=verified.max_batch,
        gradient_norm=verified.parity.gradient_norm,
        warnings=verified.parity.warnings,
        output_op=exported_ops[0],
        output_activation=exported_ops[1],
        verified={verified.spec_key: [check.to_json() for check in verified.parity.checks]},
        caveats=[*_dropped_outputs(model, decoder.task), *verified.parity.caveats],
    )
    report.seconds = {key: round(value, 4) for key, value in seconds.items()}
    return cache.Converted(verified.onnx_model, verified.graph, verified.module_names, report, metadata)


def _forward_only(
    model: onnx.ModelProto,
    normalized: onnx.ModelProto,
    passes: list[str],
    metadata: dict[str, str],
    exported_ops: tuple[str, str],
    spec: ModelSpec,
    decoder: OutputDecoder,
    why_not: str,
    seconds: dict[str, float],
) -> cache.Converted:
    """A model with no torch graph, run on onnxruntime only: kept when onnxruntime runs it on a probe batch."""
    started = time.perf_counter()
    max_batch = run_on_runtime(normalized, spec)
    seconds["verify"] = time.perf_counter() - started
    report = ConversionReport(
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opset=normalize_stage.opset_version(model),
        passes=passes,
        parity=[],
        max_batch=max_batch,
        gradient_norm=float("nan"),
        output_op=exported_ops[0],
        output_activation=exported_ops[1],
        caveats=[
            *_dropped_outputs(model, decoder.task),
            f"This model runs forward-only on onnxruntime: {why_not}. Only techniques that need no gradients run on it.",
        ],
        forward_only=why_not,
    )
    report.seconds = {key: round(value, 4) for key, value in seconds.items()}
    return cache.Converted(normalized, None, {}, report, metadata)


def _dropped_outputs(model: onnx.ModelProto, task: str) -> list[str]:
    """The sentence every result on a model with several outputs carries: only the first is read."""
    outputs = list(model.graph.output)
    if len(outputs) < 2:
        return []

    def described(value: onnx.ValueInfoProto) -> str:
        dims = ["?" if not d.HasField("dim_value") else str(d.dim_value) for d in value.type.tensor_type.shape.dim]
        return f"'{value.name}' ({' x '.join(dims)})"

    others = ", ".join(described(value) for value in outputs[1:4]) + (f" and {len(outputs) - 4} more" if len(outputs) > 4 else "")
    return [
        f"The model has {len(outputs)} outputs; viz-server reads only the first, {described(outputs[0])}, as a {task} output and ignores "
        f"{others}. If the model's answer is spread over several outputs (per-stride scores and boxes, as PicoDet and NanoDet write them), "
        "that reading, and every figure here, may be wrong."
    ]


def _checks(model: LoadedModel) -> list[dict]:
    """Every plugin's ``model_checks`` findings on the verified model (a check refuses it by raising UserError)."""
    findings = []
    for plugin_name, sentences in call_hook("model_checks", model=model):
        for sentence in sentences or ():
            findings.append({"check": plugin_name, "finding": str(sentence)})
    return findings
