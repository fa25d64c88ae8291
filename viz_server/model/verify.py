"""Stage 4: prove the torch graph computes what onnxruntime computes, or refuse to analyse the model.

Parity is measured on seeded random images inside the model's valid input range, at batch 1 and at batch 2.
The relative error is ``max|torch - ort| / max|ort|`` over the scores. The torch graph must also give a
finite, non-zero input gradient, since every gradient technique depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from viz_server.errors import UserError

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
        raise UserError(
            f"the model produces NaN or infinite scores on a valid input ({where}); its weights are broken."
        )
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
        report.warnings.append(
            f"parity at batch {parity.batch} is {parity.max_rel_error:.2g} relative, above {WARN_TOLERANCE:g}."
        )


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
