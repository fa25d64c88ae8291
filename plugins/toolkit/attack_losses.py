"""Attack losses on a classifier's logits, each one value per image that the attack maximizes.

- ``ce``: cross-entropy (Goodfellow et al. 2015; Madry et al. 2018). On a confident model the loss is 0 in
  float32 and its gradient underflows (DESIGN: about 1e-11), so an attack on it can stall without failing.
- ``margin``: the Carlini & Wagner (2017) margin, best other logit minus the true one (targeted: the target's
  logit minus the best other). Linear in the logits: no softmax to saturate.
- ``dlr``: the Difference of Logits Ratio of Croce & Hein (2020, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks"), the margin divided by the spread of the top
  logits, so it is invariant to the logits' scale as well as shift. Untargeted it needs 3 classes, targeted 4;
  with fewer it falls back to the margin.

Every function takes ``(logits, labels, targets)``: ``targets`` None is untargeted (move away from ``labels``),
otherwise the attack moves each image towards its target class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("margin", "dlr", "ce")


def _others(logits: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """The best logit other than ``excluded`` per image."""
    return logits.masked_fill(F.one_hot(excluded, logits.shape[1]).bool(), float("-inf")).amax(1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    if targets is None:
        return F.cross_entropy(logits, labels, reduction="none")
    return -F.cross_entropy(logits, targets, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    if targets is None:
        return _others(logits, labels) - logits.gather(1, labels[:, None])[:, 0]
    return logits.gather(1, targets[:, None])[:, 0] - _others(logits, targets)


def dlr(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    classes = logits.shape[1]
    if classes < (3 if targets is None else 4):
        return margin(logits, labels, targets)
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None])[:, 0]
    if targets is None:
        return -(true - _others(logits, labels)) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    target = logits.gather(1, targets[:, None])[:, 0]
    return -(true - target) / (ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12)


BY_NAME = {"ce": cross_entropy, "margin": margin, "dlr": dlr}
