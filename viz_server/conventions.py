"""Input conventions: how a model's producer preprocesses its pictures, when the file says who produced it.

An exported ONNX file rarely states its input convention, but it often says who made it: Ultralytics writes its
own metadata (``author``, ``imgsz``, ``stride``), paddle2onnx names every dynamic axis ``p2o.*``, the torch
exporter writes ``producer_name = "pytorch"``. An ``InputConvention`` recognises such a producer from the facts
of the file (``ModelFacts``) and says which spec fields its pictures are prepared with, and whether the file
settles it (``certain``: Ultralytics always feeds RGB in [0, 1]) or only makes it likely (a PaddlePaddle export
is most often a PaddleOCR model, whose convention differs from PaddleClas'). Conventions come from the
``register_input_conventions`` hook; the first one pluggy calls that recognises the model is used. The spec
records each field's source (``ModelSpec.sources``), and whatever is not certain stays flagged as guessed.

Precedence, field by field: the user, then the model's own metadata, then the convention, then a guess from
the input's shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from viz_server.plugins import collected


@dataclass(frozen=True)
class ModelFacts:
    """What a convention may look at: the file's producer, metadata, input and output shapes and node names."""

    producer: str  # producer_name as written ("pytorch", "PaddlePaddle", "" ...)
    metadata: dict[str, str]
    input_dims: tuple[int | None, ...]  # the image input's declared shape (None: dynamic)
    dim_names: tuple[str, ...]  # the symbolic names of the dynamic axes of inputs and outputs
    node_names: tuple[str, ...] = field(default=(), repr=False)
    task: str = ""  # the task the output decoder read (classification, dense, sequence ...)


@dataclass(frozen=True)
class Convention:
    """What one convention says of one model: spec field values (as metadata would give them) and their source."""

    source: str  # e.g. "Ultralytics export (metadata author, imgsz, stride)"
    fields: dict[str, Any]
    certain: bool


class InputConvention(ABC):
    """A producer's input convention. Subclasses set ``name`` and ``title`` and implement ``recognizes`` and
    ``fields``; ``certain`` is True only when the file identifies the producer and its preprocessing beyond doubt."""

    name: ClassVar[str]
    title: ClassVar[str]
    certain: ClassVar[bool] = False

    @abstractmethod
    def recognizes(self, facts: ModelFacts) -> bool:
        """True when the file was made by this producer."""

    @abstractmethod
    def fields(self, facts: ModelFacts) -> dict[str, Any]:
        """The spec fields (``viz_server.model.spec.SPEC_FIELDS`` names) this producer's pictures are prepared with."""

    def basis(self, facts: ModelFacts) -> str:
        """What in the file identifies the producer, for the source shown beside each field."""
        return ""

    def convention_for(self, facts: ModelFacts) -> Convention:
        basis = self.basis(facts)
        return Convention(f"{self.title}{f' ({basis})' if basis else ''}", self.fields(facts), self.certain)


def input_conventions() -> list[InputConvention]:
    """Every installed convention, in pluggy's call order (installed plugins before the built-ins)."""
    return [convention for _plugin, convention in collected("register_input_conventions", InputConvention)]


def convention_for(facts: ModelFacts) -> Convention | None:
    """The convention of the first installed ``InputConvention`` that recognises the model, or None."""
    for convention in input_conventions():
        if convention.recognizes(facts):
            return convention.convention_for(facts)
    return None
