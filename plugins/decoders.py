"""The built-in output decoders: classifiers (N x C scores) and dense maps (segmenters: N x C x H x W ...).

Each is a ``viz_server.tasks.OutputDecoder`` registered through ``register_output_decoders``, exactly as a
plugin for a new output layout would register its own.
"""

from __future__ import annotations

import numpy as np

from viz_server import hookimpl
from viz_server.tasks import OutputDecoder, OutputInfo

TOP = 5


def softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


class ClassScores(OutputDecoder):
    name = "class_scores"
    task = "classification"
    summary = "One pre-softmax score per class (N x C); predictions are the top classes by softmax probability."

    def recognizes(self, output: OutputInfo) -> bool:
        return len(output.shape) == 2

    def decode(self, outputs, spec):
        probabilities = softmax(outputs.astype(np.float64))
        decoded = []
        for scores, chances in zip(outputs, probabilities):
            order = np.argsort(-scores, kind="stable")[:TOP]
            decoded.append(
                {
                    "top": [
                        {"class": spec.label(int(i)), "index": int(i), "score": round(float(scores[i]), 6), "probability": round(float(chances[i]), 6)}
                        for i in order
                    ]
                }
            )
        return decoded


class DenseClassMap(OutputDecoder):
    name = "dense_class_map"
    task = "dense"
    summary = "A score map per class (N x C x ...); predictions are the classes covering most positions."

    def recognizes(self, output: OutputInfo) -> bool:
        return len(output.shape) >= 3

    def decode(self, outputs, spec):
        decoded = []
        for scores in outputs:
            winners = scores.reshape(scores.shape[0], -1).argmax(0)
            counts = np.bincount(winners, minlength=scores.shape[0])
            order = np.argsort(-counts, kind="stable")[:TOP]
            decoded.append(
                {"top": [{"class": spec.label(int(i)), "index": int(i), "area": round(float(counts[i] / winners.size), 6)} for i in order if counts[i]]}
            )
        return decoded


@hookimpl
def register_output_decoders():
    return [ClassScores(), DenseClassMap()]
