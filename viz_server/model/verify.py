"""Stage 4: prove the torch graph computes what onnxruntime computes, or refuse to analyse the model.

``verify`` runs three checks on a converted graph:

- parity: seeded random images inside the model's valid input range, at batch 1 and at batch 2; the relative
  error is ``max|torch - ort| / max|ort|`` over the scores and must stay under ``TOLERANCE``;
- the batch: a fixed batch-1 export is proposed a dynamic batch axis (``dynamic_batch``: Reshape targets copy
  the batch axis), kept only when batch 2 reproduces onnxruntime image by image; otherwise the graph runs
  one image at a time (``LoadedModel`` wraps it in ``FixedBatch``);
- the gradient: the input gradient must be finite and non-zero, since every gradient technique needs it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from viz_server.errors import UserError
from viz_server.model import guard as guard_stage
from viz_server.model.convert import convert
from viz_server.model.normalize import infer_shapes

TOLERANCE = 1e-3
"""Relative error above which a converted model is refused."""
WARN_TOLERANCE = 1e-4


@dataclass
class Parity:
    batch: int
    max_abs_error: float
    max_rel_error: float

    def to_json(self) -> dict:
        return {"batch": self.batch, "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error}


@dataclass
class ParityReport:
    checks: list[Parity] = field(default_factory=list)
    gradient_norm: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def worst_rel_error(self) -> float:
        return max((check.max_rel_error for check in self.checks), default=float("nan"))


def compare(batch: int, ours: np.ndarray, reference: np.ndarray, where: str) -> Parity:
    if ours.shape != reference.shape:
        raise UserError(
            f"the converted graph gives scores of shape {list(ours.shape)} but onnxruntime gives "
            f"{list(reference.shape)} ({where}); this model cannot be analysed faithfully."
        )
    if not np.isfinite(reference).all() or not np.isfinite(ours).all():
        raise UserError(f"the model produces NaN or infinite scores on a valid input ({where}); its weights are broken.")
    abs_error = float(np.max(np.abs(ours.astype(np.float64) - reference))) if reference.size else 0.0
    scale = max(float(np.max(np.abs(reference))) if reference.size else 0.0, 1e-6)
    return Parity(batch, abs_error, abs_error / scale)


def check_tolerance(parity: Parity, report: ParityReport) -> None:
    if parity.max_rel_error > TOLERANCE:
        raise UserError(
            f"the converted graph differs from onnxruntime by {parity.max_rel_error:.2g} (relative) at batch "
            f"{parity.batch}, above the {TOLERANCE:g} allowed; results on it would not describe this model."
        )
    if parity.max_rel_error > WARN_TOLERANCE:
        report.warnings.append(f"parity at batch {parity.batch} is {parity.max_rel_error:.2g} relative, above {WARN_TOLERANCE:g}.")


def random_inputs(spec, batch: int, seed: int = 0) -> np.ndarray:
    """Seeded random images in [0, 1], mapped into model space (the model's own range and layout)."""
    rng = np.random.default_rng(seed)
    unit = rng.random((batch, spec.height, spec.width, spec.channels), dtype=np.float32)
    return spec.unit_to_model(unit)


def torch_scores(module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(module(torch.from_numpy(batch)).detach().numpy(), dtype=np.float64)


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


def verify(normalized: onnx.ModelProto, graph: nn.Module, module_names: dict[str, str], spec, session) -> Verified:
    """Parity at batch 1 and 2 against ``session`` (onnxruntime on ``normalized``), the batch proposal, the
    gradient check; raises ``UserError`` with one sentence when the graph cannot be trusted."""
    report = ParityReport()
    notes: list[str] = []
    fixed = fixed_batch(normalized)
    first_batch = fixed if fixed and fixed > 1 else 1
    one = random_inputs(spec, first_batch, seed=0)
    two = random_inputs(spec, 2, seed=1)
    try:
        reference_one = session.run(None, {spec.input_name: one})[0]
        reference_two = np.concatenate([session.run(None, {spec.input_name: two[i : i + 1]})[0] for i in range(2)]) if fixed in (None, 1) else None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot run this model on a valid input ({str(exc).splitlines()[0][:200]}); re-export it.") from None
    try:
        ours = torch_scores(graph, one)
    except Exception as exc:  # noqa: BLE001 - a converted graph that cannot run is a conversion failure
        raise UserError(f"the converted graph cannot run this model ({type(exc).__name__}: {str(exc)[:200]}); re-export it.") from None
    parity_one = compare(first_batch, ours, reference_one, f"batch {first_batch}")
    check_tolerance(parity_one, report)
    report.checks.append(parity_one)

    result = Verified(normalized, graph, module_names, fixed, report, notes)
    if fixed is None:
        if _batch_parity(graph, two, reference_two, report) is None:
            result.max_batch = 1
            notes.append("the graph mixes images at batch > 1; images run one at a time")
    elif fixed == 1:
        candidate = dynamic_batch(normalized)
        parity = None
        if candidate is not None:
            try:
                candidate_graph, candidate_names = convert(candidate)
                parity = _batch_parity(candidate_graph, two, reference_two, report)
                if parity is not None:
                    from viz_server.model.loaded import make_session

                    make_session(candidate).run(None, {spec.input_name: two})
            except Exception:  # noqa: BLE001 - any failure of the proposal means: keep the fixed batch
                parity = None
        if parity is not None:
            result.onnx_model, result.graph, result.module_names, result.max_batch = candidate, candidate_graph, candidate_names, None
            notes.append("made the fixed batch-1 input dynamic (Reshape targets copy the batch axis)")
        else:
            notes.append("the export fixes the batch to 1; images run one at a time")
    else:
        notes.append(f"the export fixes the batch to {fixed}; images run in groups of {fixed}")

    report.gradient_norm = gradient_norm(result.graph, random_inputs(spec, result.max_batch or 1, seed=2))
    if not report.gradient_norm > 0:
        report.warnings.append("the scores have no usable gradient with respect to the input; gradient techniques will show blank maps.")
    return result


def _batch_parity(graph: nn.Module, batch: np.ndarray, reference: np.ndarray | None, report: ParityReport) -> Parity | None:
    """Batch-2 parity against onnxruntime run image by image; None when the graph cannot do batch 2."""
    if reference is None:
        return None
    try:
        ours = torch_scores(graph, batch)
        parity = compare(2, ours, reference, "batch 2")
    except (RuntimeError, UserError, ValueError):
        return None
    if parity.max_rel_error > TOLERANCE:
        return None
    check_tolerance(parity, report)
    report.checks.append(parity)
    return parity


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
