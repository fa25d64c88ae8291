"""The technique contract: what a plugin declares, what it is given, and what it returns.

A technique is a small class: ``name``, ``title``, ``family``, one-line ``summary``, ``version``, a typed
``params`` schema (which drives validation, CLI options and the web form), the ``inputs`` it needs, and
``run(ctx, params) -> Result``. It never touches files, HTTP or the database: ``Context`` hands it a loaded
model and preprocessed images, and the ``Result`` it returns is stored and shown by the core.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from viz_server.errors import Cancelled, UserError
from viz_server.evidence import bootstrap, mean_interval, wilson
from viz_server.model.spec import SPEC_FIELDS

if TYPE_CHECKING:
    import torch

    from viz_server.model.loaded import LoadedModel
    from viz_server.objectives import Objective
    from viz_server.picture_stream import PictureStream

CONTRACT_VERSION = "2"
"""The plugin contract's version, recorded in every result's provenance; see CHANGELOG.md, "Plugin contract"."""

FAMILIES = ("attribution", "network", "optimization", "robustness", "style")
SUITES = {
    "attribution": "class attributions with their sanity check and faithfulness curves",
    "network": "what the network holds: its weights, layer activations and feature spaces",
    "robustness": "accuracy under attacks, damaged images and cue conflicts",
    "dataset": "over the whole labeled set: how often each class is right, how well confidence matches it, and cues other than the object",
}
"""Audit suites a technique may declare itself part of (``Technique.suites``); an audit runs a suite's
techniques with their default parameters."""
DEFAULT_AUDIT_SUITES = ("attribution",)
"""The suites an audit offers checked when the user has not chosen."""
LABELED_AUDIT_SUITES = ("attribution", "dataset")
"""The suites an audit runs by default when every picture of its set carries a label."""
INPUTS = {
    "image": "one or more images (analysed as a batch)",
    "image_set": "a labeled image set (a folder or zip with one sub-folder per class)",
    "dataset": "a labeled image set of any size, read chunk by chunk (ctx.pictures)",
    "second_image": "a second image (e.g. the style image)",
}
RUNS_ON = {
    "graph": "the model's differentiable torch graph (gradients, hooks on layers, weights)",
    "runtime": "forward passes on onnxruntime only (runs on forward-only models too)",
}
"""What a technique reads of the model (``Technique.runs_on``). A model whose graph could not be converted is run
forward-only on onnxruntime, and only ``runtime`` techniques apply to it."""
MAX_IMAGES_PER_RUN = 256
"""The most pictures a technique that takes them as one batch (``image``, ``image_set``) gets in one run."""
MAX_DATASET_PICTURES = 20_000
"""The most pictures a technique with the ``dataset`` input reads in one run (chunk by chunk: ``ctx.pictures``)."""
PARAM_KINDS = ("int", "float", "bool", "choice", "str", "target", "layer")
RESERVED_PARAM_NAMES = frozenset(
    {"help", "h", "model", "models", "technique", "spec", "seed", "set", "image", "image_set", "second_image", "out", "json", "device", *SPEC_FIELDS}
)
"""Names a param may not take: `viz-server run` and `compare` use them for their own options (``--image-set``,
``--labels`` ...), and a param's option is ``--NAME`` (``_`` written ``-``), so it would never reach the technique."""


# ---- params ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One typed, documented technique parameter.

    Kinds: ``int``/``float`` (with optional ``minimum``/``maximum``), ``bool``, ``choice`` (one of
    ``choices``), ``str``, ``target`` (what to explain, read by the model's task: see ``Context.objective``), ``layer`` (an ONNX node
    name of the model; empty means the technique's default layer).
    """

    name: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"param {self.name}: kind must be one of {PARAM_KINDS}")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"param {self.name}: default {self.default!r} is not among its choices")

    def parse(self, raw: Any) -> Any:
        """Turn a raw value (text from the CLI or a form, or a JSON value) into a checked value."""
        try:
            value = self._convert(raw)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"parameter {self.name}={str(raw)[:40]!r} is not {self._expected()}.", field=self.name) from None
        if self.kind == "int" and not -(2**53) <= value <= 2**53:
            raise UserError(f"parameter {self.name} is out of range; give a number between -2^53 and 2^53.", field=self.name)
        if self.kind in ("int", "float"):
            if not math.isfinite(value):
                raise UserError(f"parameter {self.name} must be a finite number.", field=self.name)
            if self.minimum is not None and value < self.minimum:
                raise UserError(f"parameter {self.name}={value} is below its minimum {self.minimum:g}.", field=self.name)
            if self.maximum is not None and value > self.maximum:
                raise UserError(f"parameter {self.name}={value} is above its maximum {self.maximum:g}.", field=self.name)
        if self.kind == "choice" and value not in self.choices:
            raise UserError(f"parameter {self.name}={value!r} is not one of {', '.join(self.choices)}.", field=self.name)
        return value

    def _convert(self, raw: Any) -> Any:
        if self.kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            text = str(raw).strip()
            if isinstance(raw, str) and len(text) > 20:
                raise ValueError
            return int(text) if isinstance(raw, str) else int(raw)
        if self.kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if self.kind == "target":
            text = str(raw).strip()
            if not text or len(text) > 200:
                raise ValueError
            return text
        return "" if raw is None else str(raw).strip()

    def _expected(self) -> str:
        return {
            "int": "a whole number",
            "float": "a number",
            "bool": "true or false",
            "choice": f"one of {', '.join(self.choices)}",
            "target": "a target such as top1, a class label or index, or detection:0",
        }.get(self.kind, "text")

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "kind": self.kind, "default": self.default, "help": self.help}
        if self.minimum is not None:
            data["minimum"] = self.minimum
        if self.maximum is not None:
            data["maximum"] = self.maximum
        if self.choices:
            data["choices"] = list(self.choices)
        return data


TARGET = Param(
    "target",
    "target",
    "top1",
    "What to explain, by the model's task: top1 (the prediction), a class label or index, detection:K, step:T, similarity ...",
)


def validate_params(schema: tuple[Param, ...], raw: dict[str, Any]) -> dict[str, Any]:
    """Check raw values against a schema: unknown names are refused, missing ones take their defaults."""
    known = {param.name: param for param in schema}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        raise UserError(f"unknown parameter {unknown[0]!r}; this technique takes: {names}.", field=unknown[0])
    return {name: (param.parse(raw[name]) if name in raw else param.default) for name, param in known.items()}


# ---- result -----------------------------------------------------------------------------------------


@dataclass
class Artifact:
    """One thing to show: a PNG picture or plot, or a table; ``array`` names the raw array behind it."""

    name: str  # file name inside the result, e.g. "overlay_0.png"
    caption: str
    kind: str = "image"  # image | plot | table | points (a 2-D scatter: rows of x, y, label, image index), or a plugin's kind
    data: bytes = b""  # PNG bytes for image and plot
    array: str | None = None  # key in Result.arrays
    group: str = ""  # artifacts of one group are shown side by side (e.g. one input image)
    rows: list[list[Any]] = field(default_factory=list)  # tables and other row-based kinds; first row is the header
    scale: tuple[float, float] | None = None  # a heatmap's colour scale: the values its darkest and brightest colours stand for

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "caption": self.caption, "kind": self.kind, "array": self.array, "group": self.group}
        if self.rows:
            data["rows"] = self.rows
        if self.scale is not None:
            data["scale"] = [float(self.scale[0]), float(self.scale[1])]
        return data


@dataclass
class Result:
    """What a technique returns; the core adds ``provenance`` (technique, version, params, model hash, seed, time)."""

    artifacts: list[Artifact] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def artifact(self, name: str) -> Artifact:
        """The artifact with this file name (``KeyError`` naming the ones there are when none has it)."""
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise KeyError(f"no artifact named {name!r}; the result has {', '.join(a.name for a in self.artifacts) or 'none'}")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (numpy scalars and arrays a plugin left in metrics or rows become numbers and lists)."""
        return json_ready(
            {
                "provenance": self.provenance,
                "metrics": self.metrics,
                "caveats": self.caveats,
                "artifacts": [artifact.to_json() for artifact in self.artifacts],
                "arrays": {name: {"shape": list(array.shape), "dtype": str(array.dtype)} for name, array in self.arrays.items()},
            }
        )


def headline(
    value: Any, label: str, better: str | None = None, note: str = "", *, count: int | None = None, interval: tuple[float, float] | None = None
) -> dict[str, Any]:
    """One headline figure for ``Result.metrics["headline"][key]``: what an audit's summary card shows and what
    ``viz-server audit --fail-under KEY=VALUE`` (or ``KEY.low=VALUE``, the interval's bound) gates on. ``value``
    None means "cannot be claimed" (``note`` says why, and carries any qualifier the figure needs); ``better`` is
    ``higher``, ``lower`` or None (not a score). A figure measured on a sample carries ``count`` (pictures or
    decisions) and its 95% ``interval``: build it with ``proportion_headline`` or ``sample_headline``."""
    low, high = (float(interval[0]), float(interval[1])) if interval is not None else (None, None)
    return {"value": value, "label": label, "better": better, "note": note, "count": count, "low": low, "high": high}


def proportion_headline(successes: int, count: int, label: str, better: str | None = "higher", note: str = "") -> dict[str, Any]:
    """A proportion (``successes`` of ``count``) as a headline figure with its count and 95% Wilson interval (the
    value unrounded, so that a gate compares the figure itself)."""
    if count <= 0:
        return headline(None, label, better, note or "nothing to measure it on", count=0)
    return headline(successes / count, label, better, note, count=count, interval=wilson(successes, count))


def sample_headline(samples, label: str, better: str | None = None, note: str = "", statistic: str = "mean") -> dict[str, Any]:
    """The ``statistic`` ("mean" or "median") of one value per picture as a headline figure, with the count and its
    95% interval (Student's t for a mean, the bootstrap over pictures for a median; none for a single picture)."""
    values = [float(v) for v in samples if v is not None and math.isfinite(float(v))]
    if not values:
        return headline(None, label, better, note or "nothing to measure it on", count=0)
    if statistic == "median":
        return headline(float(np.median(values)), label, better, note, count=len(values), interval=bootstrap(values, np.median))
    return headline(float(np.mean(values)), label, better, note, count=len(values), interval=mean_interval(values))


def json_ready(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays and tuples into JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- context ----------------------------------------------------------------------------------------


@dataclass
class Context:
    """Everything a technique may use. Images are already decoded and preprocessed to model space."""

    model: LoadedModel
    images: torch.Tensor | None = None  # N x (model input shape), float32, model space
    image_names: list[str] = field(default_factory=list)
    image_labels: list[str | None] = field(default_factory=list)  # class of each image, for labeled image sets
    image_masks: list[np.ndarray | None] = field(default_factory=list)  # H x W bool object mask per image, when given
    second_image: torch.Tensor | None = None
    pictures: PictureStream | None = None  # a whole labeled set, decoded chunk by chunk (techniques with the "dataset" input)
    seed: int = 0
    on_progress: Callable[[int, int, str], None] | None = None
    is_cancelled: Callable[[], bool] | None = None

    @property
    def device(self) -> torch.device:
        """Where to keep the tensors a technique makes: the CPU. The torch graph takes and returns tensors there
        wherever it computes (``ctx.model.device``: a GPU with ``--device cuda``; ``viz_server.model.device``)."""
        import torch

        return torch.device("cpu")

    @property
    def rng(self) -> np.random.Generator:
        """A numpy generator seeded with ``seed`` (a fresh one on each access)."""
        return np.random.default_rng(self.seed)

    def torch_generator(self) -> torch.Generator:
        import torch

        return torch.Generator(device="cpu").manual_seed(self.seed)

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Report progress; also the natural place where a cancelled job stops."""
        self.check_cancelled()
        if self.on_progress is not None:
            self.on_progress(done, total, message)

    def check_cancelled(self) -> None:
        if self.is_cancelled is not None and self.is_cancelled():
            raise Cancelled("the job was cancelled")

    @property
    def channel_axis(self) -> int:
        """Axis of the colour channels in ``images`` (1 for NCHW models, 3 for NHWC)."""
        return 1 if self.model.spec.layout == "NCHW" else 3

    def display_images(self) -> np.ndarray:
        """The input images as N x H x W x 3 uint8 RGB, at the model's resolution."""
        if self.images is None:
            raise UserError("this technique needs images; give at least one.")
        return self.model.spec.to_display(self.images.detach().cpu().numpy())

    def objective(self, target: str, region: str = "") -> Objective:
        """What ``target`` means on this model's output, as an ``Objective`` made by the model's output decoder
        (a class, a detection, a decoded text, the similarity to ``second_image`` ...; see ``viz_server.objectives``)."""
        return self.model.decoder.objective(target, self, region)


# ---- the technique base class -------------------------------------------------------------------------


class Technique(ABC):
    """Base class of every technique; subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    title: ClassVar[str]
    family: ClassVar[str]
    summary: ClassVar[str]
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ("image",)
    suites: ClassVar[tuple[str, ...]] = ()  # audit suites (see SUITES) this technique runs in, with default params
    tasks: ClassVar[tuple[str, ...] | None] = None  # model tasks it applies to (see viz_server.tasks); None = every task
    # rough cost of a run with default params, relative to one class attribution's (1.0): a report's jobs leave
    # the queue longest first, by this until every technique of the report has run on the server before
    expected_cost: ClassVar[float] = 1.0
    runs_on: ClassVar[str] = "graph"  # see RUNS_ON: "runtime" when forward passes on onnxruntime are all it needs

    @abstractmethod
    def run(self, ctx: Context, params: dict[str, Any]) -> Result:
        """Compute the result for ``ctx`` with validated ``params``."""

    def supports(self, task: str) -> bool:
        """Whether this technique applies to models of ``task``."""
        return self.tasks is None or task in self.tasks

    def applies(self, task: str, forward_only: bool = False) -> bool:
        """Whether this technique applies to a model of ``task`` (run forward-only on onnxruntime, or not)."""
        return self.supports(task) and (not forward_only or self.runs_on == "runtime")

    def check_task(self, task: str, model_name: str) -> None:
        """One sentence when the technique does not apply to a model of this task."""
        if not self.supports(task):
            article = "an" if task[:1] in "aeiou" else "a"
            raise UserError(f"{self.title} applies to {' and '.join(self.tasks or ())} models; {model_name} is {article} {task} model.")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "family": self.family,
            "summary": self.summary,
            "version": self.version,
            "inputs": list(self.inputs),
            "suites": list(self.suites),
            "tasks": list(self.tasks) if self.tasks is not None else None,
            "runs_on": self.runs_on,
            "params": [param.to_json() for param in self.params],
        }


def check_technique(technique: Technique) -> list[str]:
    """Problems with a technique's declaration (empty when it follows the contract)."""
    problems = []
    for attribute in ("name", "title", "family", "summary", "version"):
        value = getattr(technique, attribute, None)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{attribute} must be a non-empty string")
    name = getattr(technique, "name", "")
    if isinstance(name, str) and not all(c.isalnum() or c in "-_" for c in name):
        problems.append("name may only hold letters, digits, '-' and '_'")
    if getattr(technique, "family", None) not in FAMILIES:
        problems.append(f"family must be one of {', '.join(FAMILIES)}")
    for needed in getattr(technique, "inputs", ()):
        if needed not in INPUTS:
            problems.append(f"input {needed!r} is not one of {', '.join(INPUTS)}")
    for suite in getattr(technique, "suites", ()):
        if suite not in SUITES:
            problems.append(f"suite {suite!r} is not one of {', '.join(SUITES)}")
    if getattr(technique, "runs_on", None) not in RUNS_ON:
        problems.append(f"runs_on must be one of {', '.join(RUNS_ON)}")
    tasks = getattr(technique, "tasks", None)
    if tasks is not None and (not isinstance(tasks, tuple) or not all(isinstance(task, str) and task for task in tasks)):
        problems.append("tasks must be None (every task) or a tuple of task names")
    if getattr(technique, "suites", ()) and "second_image" in getattr(technique, "inputs", ()):
        problems.append("a technique that needs a second image cannot be part of an audit suite")
    names = [param.name for param in getattr(technique, "params", ())]
    if len(names) != len(set(names)):
        problems.append("param names must be unique")
    if "seed" in names:
        problems.append("'seed' is given by the core to every technique (ctx.seed); do not declare it")
    clashing = sorted(name for name in names if isinstance(name, str) and name.replace("-", "_").lower() in RESERVED_PARAM_NAMES - {"seed"})
    if clashing:
        problems.append(f"param names {', '.join(clashing)} are the command line's own options; rename them")
    for param in getattr(technique, "params", ()):
        if not isinstance(param, Param):
            problems.append(f"params must be Param instances, got {type(param).__name__}")
            continue
        try:
            param.parse(param.default)
        except UserError as exc:
            problems.append(f"param {param.name}: default fails its own check ({exc})")
    return problems
