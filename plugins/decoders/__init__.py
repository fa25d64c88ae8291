"""The built-in output decoders (the ``register_output_decoders`` hook), one module per task family:

- ``classes``: classifiers (N x C scores) and dense class maps (segmenters, N x C x H x W);
- ``detection``: YOLOv5-style (N x anchors x (5 + C)), YOLOv8/v11-style (N x (4 + C) x anchors) and models
  that already output boxes and scores (N x K x 6), with non-maximum suppression;
- ``sequence``: CTC text recognizers (N x T x C);
- ``embedding``: L2-normalized feature vectors, explained by similarity to a second image.

Each decoder also turns a target into an ``Objective`` for its task (``viz_server.objectives``). A plugin for
a new layout registers its decoder the same way.
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_plugins.decoders import classes, detection, embedding, sequence


@hookimpl
def register_output_decoders():
    return [
        classes.ClassScores(),
        classes.DenseClassMap(),
        detection.BoxesAndScores(),
        detection.YoloAnchorsLast(),
        detection.YoloAnchorsFirst(),
        sequence.CTCSequence(),
        embedding.NormalizedEmbedding(),
    ]
