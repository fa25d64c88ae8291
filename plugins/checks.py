"""Built-in model checks (the ``model_checks`` hook): findings about a verified model that an auditor must see
before trusting any analysis of it.

- Constant scores: the model gives (nearly) the same scores for very different images, as a network with a
  zero-initialized or untrained head does; every explanation of it will be blank or meaningless.
- Probability outputs: the scores are already probabilities (non-negative, summing to one) although no final
  Softmax was found to strip; gradients of saturated probabilities vanish, so gradient maps of such a model are blank.
"""

from __future__ import annotations

import numpy as np

from viz_server import hookimpl

PROBES = 4
CONSTANT_BELOW = 1e-6
"""Relative spread of the scores across the probe images below which the model is called constant."""


def probe_images(spec) -> np.ndarray:
    """Very different images in model space: black, white, and two seeded noise images."""
    rng = np.random.default_rng(11)
    unit = np.stack(
        [
            np.zeros((spec.height, spec.width, spec.channels), np.float32),
            np.ones((spec.height, spec.width, spec.channels), np.float32),
            *rng.random((PROBES - 2, spec.height, spec.width, spec.channels), dtype=np.float32),
        ]
    )
    return spec.unit_to_model(unit)


@hookimpl
def model_checks(model):
    scores = model.predict(probe_images(model.spec)).astype(np.float64)
    flat = scores.reshape(len(scores), -1)
    findings = []
    scale = max(float(np.abs(flat).max()), 1e-12)
    if float((flat.max(0) - flat.min(0)).max()) / scale < CONSTANT_BELOW:
        findings.append(
            "The model gives the same scores for a black, a white and two noise images: its output does not "
            "depend on the input (an untrained or zero-initialized head?), so explanations of it cannot mean anything."
        )
    if model.spec.task == "classification" and flat.shape[1] > 1 and (flat >= 0).all() and np.allclose(flat.sum(1), 1.0, atol=1e-3):
        findings.append(
            "The scores are already probabilities (non-negative, summing to 1) although no final Softmax was found: "
            "gradients of saturated probabilities vanish, so re-export the model without its final normalization."
        )
    return findings
