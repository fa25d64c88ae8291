"""Stage 4: prove the torch graph computes what onnxruntime computes, or refuse to analyse the model.

``verify`` runs these checks on a converted graph:

- parity: probe images (shipped sample pictures and seeded noise, mapped into the model's own input space)
  at batch 1 and at batch 2, against onnxruntime running every node as written. The relative error is
  ``max|torch - ort| / max|ort|``, measured on the scores before a final squashing op (Sigmoid, Softmax, Tanh:
  a saturated output hides differences and inflates relative ones), and must stay under ``TOLERANCE``. A
  failure names the first layer where the two differ (``divergence``);
- the batch: a fixed batch-1 export is proposed a dynamic batch axis (``dynamic_batch``: Reshape targets copy
  the batch axis), kept only when batch 2 reproduces onnxruntime image by image; otherwise the graph runs
  one image at a time (``LoadedModel`` wraps it in ``FixedBatch``);
- precision: a half-precision model (computed in float32 after ``normalize``) is also compared with
  onnxruntime on its half-precision original, within ``precision.TOLERANCE``; a quantized one with
  onnxruntime's fused integer kernels, in output quantization steps; both become caveats of every result;
- the gradient: the input gradient must be finite and non-zero, since every gradient technique needs it.

Parity is keyed by the spec fields that change the input (``spec.input_key``): a changed image size, layout, range or
normalization is verified again at load (``verify_spec``), and every technique run checks its own images
first (``check_inputs``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from viz_server.errors import UserError
from viz_server.model import guard as guard_stage
from viz_server.model import precision
from viz_server.model.convert import convert, quantized_ops
from viz_server.model.divergence import first_divergence
from viz_server.model.normalize import infer_shapes
from viz_server.model.runtime import inner_graph, make_session
from viz_server.model.spec import input_key

TOLERANCE = 1e-3
"""Relative error above which a converted model is refused."""
QUANTIZED_TOLERANCE = 5e-2
"""The same for quantized graphs: a value that lands on a rounding boundary may round either way when the float
arithmetic before it is summed in another order, and the step it moves by propagates; a wrong scale or zero
point moves the scores far more."""
WARN_TOLERANCE = 1e-4
SQUASHING_OPS = frozenset({"Sigmoid", "Softmax", "LogSoftmax", "Tanh", "HardSigmoid"})
INPUT_CHECK_IMAGES = 1
"""How many of a run's own images ``check_inputs`` compares (one forward pass in each runtime)."""


@dataclass
class Parity:
    batch: int
    max_abs_error: float
    max_rel_error: float
    probe: str = ""

    def to_json(self) -> dict:
        return {"batch": self.batch, "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error, "probe": self.probe}


@dataclass
class ParityReport:
    checks: list[Parity] = field(default_factory=list)
    gradient_norm: float = 0.0
    warnings: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)

    @property
    def worst_rel_error(self) -> float:
        return max((check.max_rel_error for check in self.checks), default=0.0)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max absolute error, that error over the reference's largest magnitude)."""
    if not reference.size:
        return 0.0, 0.0
    error = float(np.max(np.abs(ours.astype(np.float64) - reference)))
    return error, error / max(float(np.max(np.abs(reference))), 1e-6)


def noise(spec, count: int, seed: int = 0) -> np.ndarray:
    """Seeded uniform noise in [0, 1] per value, mapped into model space (the model's own range and layout)."""
    rng = np.random.default_rng(seed)
    return spec.unit_to_model(rng.random((count, spec.height, spec.width, spec.channels), dtype=np.float32))


def probe_batches(spec) -> dict[str, np.ndarray]:
    """Model-space probe batches of two: "pictures" (shipped sample pictures) and "noise"."""
    noise_batch = noise(spec, 2)
    try:
        from viz_server.model.images import decode_image
        from viz_server_models import sample_images

        paths = list(sample_images().values())[:2]
        pictures = spec.preprocess([decode_image(path.read_bytes(), path.name) for path in paths]) if len(paths) == 2 else None
    except ImportError:
        pictures = None
    return {"pictures": pictures, "noise": noise_batch} if pictures is not None else {"noise": noise_batch}


def output_batch_axis(model: onnx.ModelProto, spec) -> tuple[int | None, tuple[int, ...], tuple[int, ...]] | None:
    """(the main output's batch axis, its shape at batch 1, the axes whose size follows the input's size), found by
    running onnxruntime, every node as written, on distinct probe images, never assumed: the axis that holds 1 at
    batch 1 and 2 at batch 2 (a dynamic batch), or the one axis of size 1 (a fixed batch of 1; None when the
    export squeezed it away); for a variable-size input, the axes that change at a second size. None when the
    model cannot run here or the axis cannot be told (``verify`` then says what is wrong)."""
    fixed = fixed_batch(model)
    name = model.graph.output[0].name
    probe = noise(spec, 2, seed=5)
    try:
        session = make_session(model, exact=True)
        single = session.run([name], {spec.input_name: np.concatenate([probe[:1]] * (fixed or 1))})[0]
        pair = session.run([name], {spec.input_name: probe})[0] if fixed is None else None
    except Exception:  # noqa: BLE001 - onnxruntime's own exception types; verify refuses the model in one sentence
        return None
    shape = tuple(int(size) for size in single.shape)
    varying = _size_following_axes(session, name, model, spec, shape, fixed)
    if pair is not None:
        changed = [axis for axis in range(min(len(shape), pair.ndim)) if shape[axis] == 1 and pair.shape[axis] == 2]
        return (changed[0], shape, varying) if len(changed) == 1 else None
    if fixed and fixed > 1:  # the second image in the second slot: the batch axis is the one along which only slot 1 changes
        try:
            mixed = session.run([name], {spec.input_name: np.concatenate([probe[:1], probe[1:2], *[probe[:1]] * (fixed - 2)])})[0]
        except Exception:  # noqa: BLE001
            return None
        moved = [axis for axis, size in enumerate(shape) if size == fixed and _only_slot_one_differs(single, mixed, axis)]
        return (moved[0], shape, varying) if len(moved) == 1 else None
    if shape and shape[0] == 1:
        return 0, shape, varying
    sized = [axis for axis, size in enumerate(shape) if size == 1]
    if len(sized) == 1:
        return sized[0], shape, varying
    return (None, shape, varying) if not sized else None


def _only_slot_one_differs(first: np.ndarray, second: np.ndarray, axis: int) -> bool:
    differs = [not np.array_equal(np.take(first, slot, axis), np.take(second, slot, axis)) for slot in range(first.shape[axis])]
    return differs[1] and not any(differs[:1] + differs[2:])


def _size_following_axes(session, name: str, model: onnx.ModelProto, spec, shape: tuple[int, ...], fixed: int | None) -> tuple[int, ...]:
    """The output axes whose size changes when a variable-size input grows by 32 pixels each way (none for a
    fixed-size input, or when the model cannot run at the second size)."""
    dims = guard_stage.input_dims(guard_stage.image_inputs(model)[0])
    height, width = dims[2:] if spec.layout == "NCHW" else dims[1:3]
    if height is not None and width is not None:
        return ()
    larger = replace(spec, height=spec.height + (32 if height is None else 0), width=spec.width + (32 if width is None else 0))
    try:
        other = session.run([name], {spec.input_name: np.concatenate([noise(larger, 1)] * (fixed or 1))})[0]
    except Exception:  # noqa: BLE001
        return ()
    return tuple(axis for axis in range(min(len(shape), other.ndim)) if shape[axis] != other.shape[axis])


def compared_tensor(model: onnx.ModelProto) -> tuple[str, str | None]:
    """(the tensor parity is measured on, the node computing it): the main output, or the input of a final
    squashing node (its logits)."""
    output = model.graph.output[0].name
    producer = next((node for node in model.graph.node if output in node.output), None)
    if producer is not None and producer.op_type in SQUASHING_OPS and producer.input:
        logits = producer.input[0]
        source = next((node for node in model.graph.node if logits in node.output), None)
        if source is not None:
            return logits, source.name
    return output, producer.name if producer is not None else None


class ParityProbe:
    """One batch through onnxruntime (every node as written) and through a torch graph, compared at
    ``compared_tensor``."""

    def __init__(self, model: onnx.ModelProto, module_names: dict[str, str], input_name: str, session_model: onnx.ModelProto | None = None):
        """``session_model``: run onnxruntime on this model instead, as deployed (with its graph optimizations:
        onnxruntime computes a half-precision graph in half precision only where it fuses kernels)."""
        self.model, self.module_names, self.input_name = model, module_names, input_name
        self.tensor, self.node = compared_tensor(model)
        reference = session_model or model
        if self.tensor != model.graph.output[0].name:
            reference = _with_output(reference, self.tensor)
        self.session = make_session(reference, exact=session_model is None)
        self.tolerance = QUANTIZED_TOLERANCE if quantized_ops(model) else TOLERANCE
        self.output_index = [output.name for output in self.session.get_outputs()].index(self.tensor)

    def reference(self, batch: np.ndarray, feed: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: batch if feed is None else feed})[self.output_index], dtype=np.float64)

    def ours(self, graph: nn.Module, batch: np.ndarray) -> np.ndarray:
        inner = inner_graph(graph)
        captured: list[torch.Tensor] = []
        handle = None
        if self.tensor != self.model.graph.output[0].name and self.node in self.module_names:
            module = inner.get_submodule(self.module_names[self.node])
            handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            with torch.inference_mode():
                scores = graph(torch.from_numpy(batch))
        finally:
            if handle is not None:
                handle.remove()
        value = torch.cat(captured)[: len(batch)] if captured else scores
        return np.asarray(value.detach().to(torch.float64).cpu().numpy())

    def compare(self, graph: nn.Module, batch: np.ndarray, label: str, reference: np.ndarray | None = None) -> Parity:
        """Parity on one batch; a shape mismatch or non-finite scores raise ``UserError``."""
        expected = self.reference(batch) if reference is None else reference
        try:
            ours = self.ours(graph, batch)
        except Exception as exc:  # noqa: BLE001 - a converted graph that cannot run is a conversion failure
            raise UserError(f"the converted graph cannot run this model ({type(exc).__name__}: {str(exc)[:200]}); re-export it.") from None
        if ours.shape != expected.shape:
            raise UserError(
                f"the converted graph gives scores of shape {list(ours.shape)} but onnxruntime gives {list(expected.shape)} ({label}); "
                "this model cannot be analysed faithfully."
            )
        if not np.isfinite(expected).all() or not np.isfinite(ours).all():
            raise UserError(f"the model produces NaN or infinite scores on a valid input ({label}); its weights are broken.")
        absolute, relative = relative_error(ours, expected)
        return Parity(len(batch), absolute, relative, label)

    def require(
        self, graph: nn.Module, batch: np.ndarray, label: str, module_names: dict[str, str] | None = None, reference: np.ndarray | None = None
    ) -> Parity:
        """``compare``, refusing the model (naming the first diverging layer) above its tolerance."""
        parity = self.compare(graph, batch, label, reference)
        if parity.max_rel_error > self.tolerance:
            where = first_divergence(self.model, graph, module_names or self.module_names, batch[:1], self.input_name, self.tolerance)
            raise UserError(
                f"the converted graph differs from onnxruntime by {parity.max_rel_error:.2g} (relative) on {label}, above the "
                f"{self.tolerance:g} allowed; results on it would not describe this model" + (f" ({where})." if where else ".")
            )
        return parity


def _with_output(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    known = {value.name: value for value in extended.graph.value_info}
    extended.graph.output.append(known.get(tensor) or onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return extended


def gradient_norm(module: torch.nn.Module, batch: np.ndarray) -> float:
    """Norm of d(random projection of the scores)/d(input); zero means gradient techniques would be blank."""
    inputs = torch.from_numpy(batch).requires_grad_(True)
    with torch.enable_grad():
        scores = module(inputs)
        weights = torch.from_numpy(np.random.default_rng(1).standard_normal(scores.shape).astype(np.float32))
        (scores * weights).sum().backward()
    grad = inputs.grad
    return float(grad.norm()) if grad is not None and torch.isfinite(grad).all() else float("nan")


@dataclass
class Verified:
    """What verification settled: the graph to use (possibly the dynamic-batch proposal) and its report."""

    onnx_model: onnx.ModelProto
    graph: nn.Module
    module_names: dict[str, str]
    max_batch: int | None  # None: any batch in one pass; N: the graph only takes batches of exactly N
    parity: ParityReport
    notes: list[str] = field(default_factory=list)
    spec_key: str = ""


def _note_parity(parity: Parity, report: ParityReport) -> None:
    report.checks.append(parity)
    if parity.max_rel_error > WARN_TOLERANCE:
        report.warnings.append(f"parity on {parity.probe} is {parity.max_rel_error:.2g} relative, above {WARN_TOLERANCE:g}.")


def verify(
    normalized: onnx.ModelProto, graph: nn.Module, module_names: dict[str, str], spec, original: onnx.ModelProto | None = None, kind: str | None = None
) -> Verified:
    """Parity at batch 1 and 2 against onnxruntime on ``normalized``, the batch proposal, the precision checks
    (``original``: the model before it was computed in float32, in precision ``kind``), the gradient check;
    raises ``UserError`` with one sentence when the graph cannot be trusted."""
    report = ParityReport()
    notes: list[str] = []
    probe = ParityProbe(normalized, module_names, spec.input_name)
    fixed = fixed_batch(normalized)
    probes = probe_batches(spec)
    pictures = probes.get("pictures", probes["noise"])
    first = pictures[:1]
    if fixed and fixed > 1:
        first = np.concatenate([first] * fixed)
    batches = {"a sample picture and noise": np.concatenate([pictures[1:2], probes["noise"][:1]])}  # the batch-2 probe
    try:
        reference_first = probe.reference(first)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(_cannot_run(exc, spec)) from None
    reference_two = {}
    if fixed in (None, 1):
        try:
            reference_two = {name: np.concatenate([probe.reference(batch[i : i + 1]) for i in range(2)]) for name, batch in batches.items()}
        except Exception as exc:  # noqa: BLE001
            raise UserError(_cannot_run(exc, spec)) from None
    label = f"{'a sample picture' if 'pictures' in probes else 'noise'} at batch {len(first)}"
    _note_parity(probe.require(graph, first, label, reference=reference_first), report)

    result = Verified(normalized, graph, module_names, fixed, report, notes, input_key(spec))
    operations = quantized_ops(normalized)
    if "DynamicQuantizeLinear" in operations and fixed in (None, 1):
        result.max_batch = 1
        notes.append("dynamic quantization takes its range from the whole batch; images run one at a time so each result is the image's own")
    elif fixed is None:
        if not _batch_parity(probe, graph, batches, reference_two, report):
            result.max_batch = 1
            notes.append("the graph mixes images at batch > 1; images run one at a time")
    elif fixed == 1:
        _propose_dynamic_batch(result, probe, batches, reference_two, spec)
    else:
        notes.append(f"the export fixes the batch to {fixed}; images run in groups of {fixed}")

    if operations:
        _quantization_caveats(result, probe, operations, first[:1] if result.max_batch in (None, 1) else first, spec)
    if original is not None:
        _precision_caveats(result, probe, original, kind or "float16", first, spec)
    report.gradient_norm = gradient_norm(result.graph, noise(spec, result.max_batch or 1, seed=2))
    if not report.gradient_norm > 0:
        report.warnings.append("the scores have no usable gradient with respect to the input; gradient techniques will show blank maps.")
    return result


def run_on_runtime(normalized: onnx.ModelProto, spec) -> int | None:
    """For a model with no torch graph: onnxruntime must run it on probe pictures (one sentence when it cannot);
    return the batch it takes (the export's fixed batch; 1 when a batch of two gives other outputs than one at a
    time; else None, any batch)."""
    probe = ParityProbe(normalized, {}, spec.input_name)
    fixed = fixed_batch(normalized)
    probes = probe_batches(spec)
    pictures = np.concatenate([probes.get("pictures", probes["noise"])[:1], probes["noise"][:1]])
    try:
        if fixed is not None:
            probe.reference(np.concatenate([pictures[:1]] * fixed))
            return fixed
        together = probe.reference(pictures)
        alone = np.concatenate([probe.reference(pictures[index : index + 1]) for index in range(2)])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(_cannot_run(exc, spec)) from None
    return None if np.allclose(together, alone, rtol=1e-4, atol=1e-5) else 1


def _cannot_run(exc: Exception, spec) -> str:
    """The sentence for onnxruntime failing on a probe; a guessed input size is the usual cause."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if any(sign in str(exc) for sign in ("bfc_arena", "Failed to allocate", "bad_alloc", "can't allocate memory")):
        return (
            f"one picture through this model needs more memory than this process may use ({detail[:120]}); a server refuses "
            "models beyond a job's budget (VIZ_SERVER_JOB_MEMORY_MB)."
        )
    if "image_size" in spec.guessed:
        return (
            f"onnxruntime cannot run this model at {spec.height}x{spec.width}, an input size viz-server had to guess ({detail}); "
            "give the size it was exported for (image_size, e.g. 48,320 for a text recognizer)."
        )
    return f"onnxruntime cannot run this model on a valid input ({detail}); re-export it."


def _batch_parity(
    probe: ParityProbe, graph: nn.Module, batches: dict[str, np.ndarray], reference_two: dict[str, np.ndarray], report: ParityReport | None
) -> bool:
    """Whether batch 2 reproduces onnxruntime run image by image on every probe batch (recorded in ``report``)."""
    checks = []
    for name, batch in batches.items():
        if name not in reference_two:
            return False
        try:
            parity = probe.compare(graph, batch, f"{name} at batch 2", reference_two[name])
        except UserError:
            return False
        if parity.max_rel_error > probe.tolerance:
            return False
        checks.append(parity)
    if report is not None:
        for parity in checks:
            _note_parity(parity, report)
    return True


def _propose_dynamic_batch(result: Verified, probe: ParityProbe, batches, reference_two, spec) -> None:
    candidate = dynamic_batch(result.onnx_model)
    accepted = False
    if candidate is not None:
        try:
            candidate_graph, candidate_names = convert(candidate)
            accepted = _batch_parity(probe, candidate_graph, batches, reference_two, None)
            if accepted:
                make_session(candidate).run(None, {spec.input_name: next(iter(batches.values()))})
                _batch_parity(probe, candidate_graph, batches, reference_two, result.parity)
        except Exception:  # noqa: BLE001 - any failure of the proposal means: keep the fixed batch
            accepted = False
    if accepted:
        result.onnx_model, result.graph, result.module_names, result.max_batch = candidate, candidate_graph, candidate_names, None
        result.notes.append("made the fixed batch-1 input dynamic (Reshape targets copy the batch axis)")
    else:
        result.notes.append("the export fixes the batch to 1; images run one at a time")


def output_step(model: onnx.ModelProto) -> float | None:
    """The quantization step of the main output, when a DequantizeLinear computes it (its largest scale)."""
    output = model.graph.output[0].name
    producer = next((node for node in model.graph.node if output in node.output), None)
    if producer is None or producer.op_type != "DequantizeLinear" or len(producer.input) < 2:
        return None
    scale = next((tensor for tensor in model.graph.initializer if tensor.name == producer.input[1]), None)
    return float(np.max(np.abs(numpy_helper.to_array(scale)))) if scale is not None else None


def _quantization_caveats(result: Verified, probe: ParityProbe, operations: list[str], batch: np.ndarray, spec) -> None:
    """Quantized graphs: the integer kernels onnxruntime deploys, compared in output quantization steps."""
    deployed = make_session(result.onnx_model)
    try:
        kernels = np.asarray(deployed.run(None, {spec.input_name: batch})[0], dtype=np.float64)
        with torch.inference_mode():
            ours = result.graph(torch.from_numpy(batch)).to(torch.float64).numpy()
        absolute, relative = relative_error(ours, kernels)
    except Exception:  # noqa: BLE001 - the fused kernels are a comparison, not the reference
        absolute, relative = float("nan"), float("nan")
    step = output_step(result.onnx_model)
    measured = f"{absolute / step:.1f} output quantization steps ({relative:.2g} relative)" if step else f"{relative:.2g} (relative)"
    literal = result.parity.worst_rel_error
    result.parity.caveats.append(
        f"Quantized model ({', '.join(operations)}): the torch graph reproduces its quantize/dequantize arithmetic (to {literal:.2g} relative: "
        f"values on a rounding boundary may round the other way) and differs from onnxruntime's fused integer kernels by {measured}; "
        "gradients are those of the float surrogate (rounding passed straight through, Bengio et al. 2013), not of integer arithmetic, which has none."
    )


def _precision_caveats(result: Verified, probe: ParityProbe, original: onnx.ModelProto, kind: str, batch: np.ndarray, spec) -> None:
    """A model computed in float32 instead of its own precision: compared with onnxruntime on the original."""
    try:
        reference_probe = ParityProbe(result.onnx_model, result.module_names, spec.input_name, session_model=original)
        expected = reference_probe.reference(batch, feed=precision.original_inputs(original, spec.input_name, batch))
    except Exception:  # noqa: BLE001 - onnxruntime lacks many bfloat16 CPU kernels
        result.parity.caveats.append(
            f"The model computes in {kind}; viz-server analyses it in float32, and onnxruntime cannot run the {kind} original here to measure the difference."
        )
        return
    parity = probe.compare(result.graph, batch, f"the {kind} original", expected)
    if parity.max_rel_error > precision.TOLERANCE[kind]:
        raise UserError(
            f"the float32 graph differs from the {kind} original by {parity.max_rel_error:.2g} (relative), more than {kind} rounding explains "
            f"({precision.TOLERANCE[kind]:g}); results on it would not describe this model."
        )
    result.parity.checks.append(parity)
    result.parity.caveats.append(
        f"The model computes in {kind}; viz-server analyses it in float32, which agrees with onnxruntime on the {kind} original to "
        f"{parity.max_rel_error:.2g} (relative)."
    )


def verify_spec(model: onnx.ModelProto, graph: nn.Module, module_names: dict[str, str], spec) -> list[dict]:
    """Parity at a spec other than the one the conversion was verified at (a new size, layout, range or
    normalization); raises ``UserError`` naming the first diverging layer when the graph does not hold there."""
    probe = ParityProbe(model, module_names, spec.input_name)
    checks = []
    for name, batch in probe_batches(spec).items():
        single = batch[:1]
        fixed = fixed_batch(model)
        if fixed and fixed > 1:
            single = np.concatenate([single] * fixed)
        try:
            checks.append(probe.require(graph, single, f"{name} at {spec.height}x{spec.width}").to_json())
        except UserError as exc:
            raise UserError(f"at the spec in use ({spec.height}x{spec.width}, {spec.layout}, range {list(spec.value_range)}): {exc}") from None
    return checks


def check_inputs(model, batch: np.ndarray) -> Parity | None:
    """A run's own images (the first few) through both runtimes: the graph must hold on what it is used on. None
    for a model that runs forward-only: there is no second runtime to compare with."""
    if model.forward_only:
        return None
    probe = model.parity_probe
    images = np.ascontiguousarray(batch[:INPUT_CHECK_IMAGES], dtype=np.float32)
    if model.max_batch is not None:
        images = images[: model.max_batch]
        if len(images) < model.max_batch:
            images = np.concatenate([images, np.repeat(images[-1:], model.max_batch - len(images), axis=0)])
    return probe.require(model.module, images, "the images of this run")


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the export fixes, or None when the batch axis is dynamic."""
    return guard_stage.input_dims(guard_stage.image_inputs(model)[0])[0]


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy whose fixed batch-1 input is symbolic and whose constant Reshape targets follow the batch axis.

    Returns None when the batch axis is already dynamic or not 1. The rewrite is a proposal: ``verify``
    keeps it only when batch 2 reproduces onnxruntime's per-image outputs.
    """
    value = next(v for v in model.graph.input if v.name not in {t.name for t in model.graph.initializer})
    batch = value.type.tensor_type.shape.dim[0]
    if not (batch.HasField("dim_value") and batch.dim_value == 1):
        return None
    candidate = onnx.ModelProto()
    candidate.CopyFrom(model)
    candidate_input = next(v for v in candidate.graph.input if v.name == value.name)
    candidate_input.type.tensor_type.shape.dim[0].dim_param = "batch"
    initializers = {tensor.name: tensor for tensor in candidate.graph.initializer}
    consumers = Counter(name for node in candidate.graph.node for name in node.input)
    for node in candidate.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        allowzero = any(a.name == "allowzero" and a.i == 1 for a in node.attribute)
        target = numpy_helper.to_array(initializers[node.input[1]]).copy()
        if target.ndim != 1 or target.size < 2 or target[0] != 1:
            continue
        if -1 not in target:
            target[0] = -1  # infer the batch axis from the element count
        elif not allowzero:
            target[0] = 0  # 0 = copy the input's dimension: the batch axis
        else:
            continue
        new_name = f"{node.input[1]}__batch" if consumers[node.input[1]] > 1 else node.input[1]
        tensor = numpy_helper.from_array(target, new_name)
        if new_name == node.input[1]:
            initializers[new_name].CopyFrom(tensor)
        else:
            candidate.graph.initializer.append(tensor)
            node.input[1] = new_name
    del candidate.graph.value_info[:]
    candidate.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    infer_shapes(candidate)
    return candidate
