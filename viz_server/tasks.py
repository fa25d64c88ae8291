"""Model tasks: what a model's main output means, read by output decoders.

An ``OutputDecoder`` recognises an output layout from the output's declared shape and the model's metadata,
names the model's task (``TASKS``), and decodes raw outputs into what the model says in plain terms (top
classes, a class map's areas, detections ...). Decoders come from the ``register_output_decoders`` hook; the
built-in ones are registered exactly like a third-party plugin's, so a new layout is a plugin, not a core
change. The spec records the task (``ModelSpec.task``; guessed unless the metadata or the user set it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from viz_server.errors import UserError
from viz_server.plugins import collected

if TYPE_CHECKING:
    import onnx

    from viz_server.objectives import Objective

TASKS = {
    "classification": "one score per class (N x C)",
    "dense": "a score map per class (segmenters: N x C x H x W)",
    "detection": "boxes with class scores",
    "sequence": "a class per time step (CTC-style text recognizers: N x T x C)",
    "embedding": "a feature vector compared by similarity",
}


@dataclass(frozen=True)
class OutputInfo:
    """What a decoder may look at to recognise a layout."""

    shape: tuple[int | None, ...]  # the main output's declared shape; None for a dynamic axis
    metadata: dict[str, str] = field(default_factory=dict)  # the model's metadata_props
    final_op: str = ""  # op type of the node computing the output, as exported (a final Softmax is later stripped)
    graph: onnx.GraphProto | None = field(default=None, compare=False)  # the normalized graph, for structural checks
    activation: str = ""  # the last op computing values before the output, through ops that only lay them out (a
    # time-major recognizer's LogSoftmax before its final Transpose)


class OutputDecoder(ABC):
    """Reads one output layout. Subclasses set ``name``, ``task`` (a key of ``TASKS`` or a new task), ``summary``,
    ``targets`` (the target syntax, for help texts) and ``priority`` (higher is asked first), and implement
    ``recognizes``, ``decode`` and ``objective``."""

    name: ClassVar[str]
    task: ClassVar[str]
    summary: ClassVar[str]
    targets: ClassVar[str] = "top1"
    priority: ClassVar[int] = 0

    @abstractmethod
    def recognizes(self, output: OutputInfo) -> bool:
        """True when this decoder can read ``output``."""

    @abstractmethod
    def decode(self, outputs: np.ndarray, spec) -> list[dict[str, Any]]:
        """One JSON-ready dict per image saying what the model predicts, from a batch of raw outputs."""

    def objective(self, target: str, ctx, region: str = "") -> Objective:
        """The ``Objective`` a target text means for this output (``ctx``: the technique's Context)."""
        raise UserError(f"the {self.name} decoder reads {self.task} outputs but defines no targets to explain.")

    def suggested_targets(self, spec: dict[str, Any], output_shape: list) -> list[tuple[str, str]]:
        """(value, text) of targets to offer in forms, from the stored spec and output shape (no model code runs)."""
        return [("top1", "top1")]

    def class_count(self, output: OutputInfo) -> int | None:
        """How many classes the output distinguishes (labels must match it), or None when it does not say."""
        return output.shape[1] if len(output.shape) >= 2 else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "summary": self.summary, "targets": self.targets, "priority": self.priority}


def output_decoders() -> list[OutputDecoder]:
    """Every installed decoder, highest priority first (pluggy's call order among equals: the last registered plugin
    first, ``tryfirst`` before the rest)."""
    found = [decoder for _plugin, decoder in collected("register_output_decoders", OutputDecoder)]
    return sorted(found, key=lambda decoder: -decoder.priority)


def choose_decoder(output: OutputInfo, task: str | None = None) -> OutputDecoder:
    """The decoder for this output: the highest-priority one that recognises it (of ``task``, when given)."""
    installed = output_decoders()
    for decoder in installed:
        if (task is None or decoder.task == task) and decoder.recognizes(output):
            return decoder
    shape = "x".join("?" if dim is None else str(dim) for dim in output.shape)
    if task is not None:
        known = sorted({decoder.task for decoder in installed})
        raise UserError(
            f"no installed output decoder reads a {task} output of shape {shape} (tasks installed: "
            f"{', '.join(known) or 'none'}); set another task or install a plugin for this layout."
        )
    raise UserError(
        f"viz-server cannot tell what this model's output of shape {shape} means; "
        f"set the task ({', '.join(TASKS)}) or install a decoder plugin for this layout."
    )
