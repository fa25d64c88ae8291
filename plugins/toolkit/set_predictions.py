"""The model's predictions over a whole labeled set (``ctx.pictures``), computed once, chunk by chunk, and shared
by every figure of the dataset suite: per-class accuracy, calibration and the shortcut scan read the same pass.

Kept per process for the last few (model, spec, set) triples (the CLI runs an audit's jobs in one process), and a
key holds everything the predictions depend on; under a job runner the scores are a per-picture work whose shards
are kept in the store and shared by the jobs of the audit, whichever process runs them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from viz_server.errors import UserError
from viz_server.model.spec import spec_digest
from viz_server.picture_stream import Chunk, per_picture
from viz_server.techniques import Context
from viz_server_plugins.toolkit.objectives import class_scores

KEPT = 4
_kept: OrderedDict[tuple, SetPredictions] = OrderedDict()


@dataclass
class SetPredictions:
    scores: np.ndarray  # N x C class scores (logits), summed over the positions of a dense output
    probabilities: np.ndarray  # N x C, the model's own: softmax over classes, or [1 - p, p] for one sigmoid output
    labels: np.ndarray  # N: the class index each picture's label names
    classes: list[str]  # class names, by index

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels


def set_predictions(ctx: Context) -> SetPredictions:
    """The predictions of ``ctx.model`` on every picture of ``ctx.pictures``, which must all carry a label the model
    knows (one sentence naming the first that does not)."""
    stream = ctx.pictures
    if stream is None or not len(stream):
        raise UserError("this technique reads a labeled image set; give one (--image-set, or a set on the Audit page).")
    spec = ctx.model.spec
    key = (ctx.model.sha256, spec_digest(spec), stream.digest)
    ctx.check_cancelled()
    if key in _kept:
        _kept.move_to_end(key)
        return _kept[key]
    labels = np.zeros(len(stream), np.int64)
    for index, label in enumerate(stream.labels):
        if not label:
            raise UserError(f"{stream.names[index][:80]} has no label; every picture of the set needs its class (one sub-folder per class).")
        try:
            labels[index] = spec.class_index(label)
        except (UserError, ValueError, KeyError):
            raise UserError(f"{stream.names[index][:80]} is labeled {label[:40]!r}, which is not one of the model's classes.") from None
    logits = stream.rows("class_scores", lambda done, total: ctx.progress(done, total, "predicting every picture of the set"))
    if logits.shape[1] < 2:
        raise UserError(
            f"{ctx.model.name} gives one score per picture; the dataset suite reads one score per class (a two-class model with a single output is not supported yet)."
        )
    broken = np.flatnonzero(~np.isfinite(logits).all(1))
    if broken.size:
        raise UserError(
            f"the model's scores for {stream.names[int(broken[0])][:80]} are not finite (NaN or infinite) ({broken.size} pictures in all); no figure over the set can be trusted."
        )
    probabilities = class_probabilities(ctx.model, logits)
    classes = [spec.label(index) for index in range(probabilities.shape[1])]
    found = SetPredictions(logits, probabilities, labels, classes)
    _kept[key] = found
    while len(_kept) > KEPT:
        _kept.popitem(last=False)
    return found


@per_picture("class_scores")
def chunk_scores(model, chunk: Chunk) -> np.ndarray:
    """The model's class scores for a chunk of pictures (split over processes under scale-out)."""
    return class_scores(torch.from_numpy(model.predict(chunk.images.numpy()))).numpy().astype(np.float64)


def class_probabilities(model, scores: np.ndarray) -> np.ndarray:
    """N x C class scores -> the model's own probabilities: a softmax over classes, or [1 - p, p] for one output
    (p its own value behind a final Sigmoid, else the sigmoid of its logit)."""
    if scores.shape[1] == 1:
        squashed = model.conversion.output_op in ("Sigmoid", "HardSigmoid")
        positive = np.clip(scores[:, 0], 0, 1) if squashed else special.expit(scores[:, 0])
        return np.stack([1 - positive, positive], 1)
    return special.softmax(scores, axis=1)


def decide(model, batch: np.ndarray) -> np.ndarray:
    """The class each model-space picture is predicted to be (forward only)."""
    scores = class_scores(torch.from_numpy(model.predict(batch))).numpy().astype(np.float64)
    return class_probabilities(model, scores).argmax(1)
