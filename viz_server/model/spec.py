"""What a model expects of its input, and the one place images are mapped to and from model space.

A ``ModelSpec`` is read from the ONNX ``metadata_props`` when the exporter wrote them, guessed from the
input shape otherwise (every guess is recorded in ``guessed``), and overridable by the user (keyword
arguments, CLI flags, or a JSON/TOML sidecar file).

The spec's fields (``SPEC_FIELDS``: name, parser, CLI flag, help, whether it changes what the model is fed)
are listed once, below; the metadata keys, sidecar keys, CLI flags, web form fields and API fields are theirs.
Metadata values are JSON, or comma-separated lists.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from viz_server.conventions import Convention
from viz_server.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class ModelSpec:
    """The input contract of one image model."""

    input_name: str
    layout: str  # "NCHW" or "NHWC"
    channels: int
    height: int
    width: int
    value_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"
    labels: tuple[str, ...] = ()
    num_classes: int = 0
    task: str = "classification"  # what the output means (see viz_server.tasks)
    guessed: tuple[str, ...] = field(default=())
    sources: tuple[tuple[str, str], ...] = field(default=())  # (spec field, where its value came from)

    def source(self, name: str) -> str:
        """Where the value of spec field ``name`` came from ("given by you", "the model's metadata", a convention, a guess)."""
        return dict(self.sources).get(name, "")

    def guessed_input(self) -> str:
        """One sentence naming the guessed fields that change what the model is fed, with their values and
        sources (empty when none is guessed): what every result on this model must say."""
        named = {"normalization": ("mean", "std")}
        by_source: dict[str, list[str]] = {}
        for guessed in self.guessed:
            for name in named.get(guessed, (guessed,)):
                if name in SPEC_FIELDS and SPEC_FIELDS[name].changes_input:
                    by_source.setdefault(self.source(name), []).append(f"{name} {SPEC_FIELDS[name].shown(asdict(self))}")
        parts = [f"{', '.join(fields)} ({source})" for source, fields in by_source.items()]
        if not parts:
            return ""
        return (
            "The model's input convention is partly guessed, so every figure here describes the model fed this way: "
            + "; ".join(parts)
            + ". Set the spec if the model expects otherwise."
        )

    # ---- model space <-> pictures -------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image in the model's own layout (no batch axis)."""
        if self.layout == "NCHW":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def preprocess(self, pictures: list[Image.Image]) -> np.ndarray:
        """Decoded pictures -> a float32 batch in the model's own layout, range and normalization."""
        batch = np.stack([self.picture_to_unit(picture) for picture in pictures])  # N,H,W,C in [0,1]
        return self.unit_to_model(batch)

    def picture_to_unit(self, picture: Image.Image) -> np.ndarray:
        """Resize one picture to the model's size; H,W,C float32 in [0, 1], channels as the model wants."""
        resized = picture.convert("RGB").resize((self.width, self.height), Image.Resampling.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32) / 255.0
        if self.channels == 1:
            pixels = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            return pixels[..., None]
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        if self.channels == 4:
            pixels = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=-1)
        return np.ascontiguousarray(pixels)

    def picture_to_mask(self, picture: Image.Image) -> np.ndarray:
        """An object mask picture (white on the object) -> H x W bool at the model's size, resized as images are."""
        grey = picture.convert("L").resize((self.width, self.height), Image.Resampling.NEAREST)
        return np.asarray(grey) > 127

    def unit_to_model(self, unit: np.ndarray) -> np.ndarray:
        """N,H,W,C images in [0, 1] -> model space (range, normalization, layout)."""
        low, high = self.value_range
        values = low + unit * (high - low)
        values = (values - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            values = values.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(values, dtype=np.float32)

    def model_to_unit(self, batch: np.ndarray) -> np.ndarray:
        """Inverse of ``unit_to_model``: model-space batch -> N,H,W,C in [0, 1] (not clipped)."""
        values = np.asarray(batch, dtype=np.float32)
        if self.layout == "NCHW":
            values = values.transpose(0, 2, 3, 1)
        values = values * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        low, high = self.value_range
        return (values - low) / (high - low)

    def to_display(self, batch: np.ndarray) -> np.ndarray:
        """Model-space batch -> N,H,W,3 uint8 RGB pictures for showing to a person."""
        unit = np.clip(self.model_to_unit(batch), 0.0, 1.0)
        if unit.shape[-1] == 1:
            unit = np.repeat(unit, 3, axis=-1)
        elif unit.shape[-1] == 4:
            unit = unit[..., :3]
        if self.channel_order == "BGR" and self.channels == 3:
            unit = unit[..., ::-1]
        return (unit * 255.0 + 0.5).astype(np.uint8)

    def unit_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-element lower/upper bounds of a valid model-space image (for clamping optimizers)."""
        zeros = np.zeros((1, self.height, self.width, self.channels), np.float32)
        return self.unit_to_model(zeros)[0], self.unit_to_model(zeros + 1.0)[0]

    # ---- labels ---------------------------------------------------------------------------------
    def label(self, index: int) -> str:
        """The class name of an output index (its number when the model ships no labels)."""
        if 0 <= index < len(self.labels):
            return self.labels[index]
        return str(index)

    def class_index(self, target: str | int) -> int:
        """A class given as a label or an index -> its output index. A label always wins when the text matches one
        (labels such as "0" and "180" are labels); ``index:N`` forces an index."""
        if isinstance(target, int):
            return self._checked_index(target)
        text = str(target).strip()
        if text.lower().startswith("index:") and text[6:].strip().lstrip("-").isdigit():
            return self._checked_index(int(text[6:]))
        if text in self.labels:
            return self.labels.index(text)
        lowered = [name.lower() for name in self.labels]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if text.lstrip("-").isdigit():
            return self._checked_index(int(text))
        known = ", ".join(self.labels[:12]) + (" ..." if len(self.labels) > 12 else "")
        if not self.labels:
            raise UserError(f"class '{target}' is not a number and this model has no labels; give a class index.")
        raise UserError(f"class '{target}' is not one of this model's labels ({known}); give a label or an index.")

    def _checked_index(self, index: int) -> int:
        if index < 0:
            raise UserError(f"class {index} is not a class index; give 0 or more.")
        if self.num_classes and index >= self.num_classes:
            raise UserError(f"class {index} is out of range: this model has {self.num_classes} classes (0-{self.num_classes - 1}).")
        return index

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- building a spec -----------------------------------------------------------------------------

ULTRALYTICS_TASKS = {"classify": "classification", "detect": "detection", "segment": "detection", "pose": "detection", "obb": "detection"}


def spec_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """The model's metadata with our spec keys filled in from other exporters' conventions: Ultralytics writes
    ``names`` (a dict literal of class names), ``imgsz`` and ``task`` (classify, detect, segment, pose, obb)."""
    found = dict(metadata)
    if "names" in found and "labels" not in found:
        try:
            names = ast.literal_eval(found["names"])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            names = None
        if isinstance(names, dict) and all(isinstance(key, int) for key in names):
            found["labels"] = json.dumps([str(names[key]) for key in sorted(names)])
    if "imgsz" in found and "image_size" not in found:
        found["image_size"] = found["imgsz"]
    task = str(found.get("task", "")).strip().lower()
    if task in ULTRALYTICS_TASKS:
        found["task"] = ULTRALYTICS_TASKS[task]
    return found


def _paddle_characters(text: str, num_classes: int) -> dict[str, tuple[str, ...]]:
    """PaddleOCR recognizers carry their character dictionary in the metadata key ``character``, one per line;
    their CTC classes are the blank, those characters and, by default, a space. Labels only when the count fits."""
    characters = text.split("\n")
    if not num_classes:  # a sequence decoder counts its classes itself (and falls back to indices on a mismatch)
        return {"labels": (*characters, " ")}
    for labels in (characters + [" "], characters):
        if len(labels) == num_classes:
            return {"labels": tuple(labels)}
    return {}


# ---- the spec fields ------------------------------------------------------------------------------


def _layout(value: Any) -> str:
    return _one_of(value, ("NCHW", "NHWC"))


def _channel_order(value: Any) -> str:
    return _one_of(value, ("RGB", "BGR"))


def _one_of(value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().upper()
    if text not in allowed:
        raise ValueError
    return text


def _task(value: Any) -> str:
    text = str(value).strip().lower()
    if not text or len(text) > 40 or not all(c.isalnum() or c == "_" for c in text):
        raise ValueError
    return text


MAX_LABELS = 100_000
"""Most class labels a spec holds (ImageNet-21k has 21,843; a CJK recognizer's dictionary about 6,600)."""
MAX_LABEL_CHARACTERS = 200


def _labels(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in (value.splitlines() if "\n" in value else value.split(",")) if part.strip()]
    if isinstance(value, dict):  # {"0": "cat", ...}
        value = [value[k] for k in sorted(value, key=lambda k: int(k))]
    labels = tuple(str(item) for item in value)
    if len(labels) > MAX_LABELS:
        raise UserError(f"{len(labels)} labels were given; a spec holds at most {MAX_LABELS}.", field="labels")
    if any(len(label) > MAX_LABEL_CHARACTERS for label in labels):
        raise UserError(f"a label is longer than {MAX_LABEL_CHARACTERS} characters; give short class names.", field="labels")
    return labels


def _numbers(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.replace("x", ",").split(",") if part.strip()]
    numbers = (float(value),) if isinstance(value, (int, float)) else tuple(float(item) for item in value)
    if not numbers or not all(math.isfinite(number) for number in numbers):
        raise ValueError
    return numbers


def _value_range(value: Any) -> tuple[float, float]:
    low, high = _numbers(value)
    if high <= low:
        raise ValueError
    return (low, high)


def _std(value: Any) -> tuple[float, ...]:
    numbers = _numbers(value)
    if min(numbers) <= 0:
        raise ValueError
    return numbers


def _image_size(value: Any) -> tuple[int, int]:
    sizes = tuple(int(number) if float(number).is_integer() else -1 for number in _numbers(value))
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or not all(1 <= size <= 4096 for size in sizes):
        raise ValueError
    return (sizes[0], sizes[1])


def _joined(values: Any, separator: str = ",") -> str:
    return separator.join(f"{value:g}" if isinstance(value, float) else str(value) for value in values)


@dataclass(frozen=True)
class SpecField:
    """One field of the model spec, read from metadata, a sidecar file, a CLI flag (``flag``), the web form and
    the API (``name``). ``parse`` turns a JSON value or text into the field's value (``ValueError`` when it is
    wrong; ``hint`` then says what is expected); ``sets`` are the ``ModelSpec`` attributes it decides;
    ``changes_input`` says whether it changes what the model is fed, so that verification holds per value (see
    ``input_key``); ``shown`` writes a spec's current value back as form text; ``lines``: a multi-line form field."""

    name: str
    parse: Callable[[Any], Any]
    hint: str
    help: str
    sets: tuple[str, ...]
    changes_input: bool
    shown: Callable[[dict[str, Any]], str]
    type: str = "text"  # what a value is, for the docs: "NCHW | NHWC", "2 numbers" ...
    lines: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SPEC_FIELDS: dict[str, SpecField] = {
    entry.name: entry
    for entry in (
        SpecField("layout", _layout, "NCHW or NHWC", "input layout: NCHW or NHWC", ("layout",), True, lambda spec: spec["layout"], type="NCHW or NHWC"),
        SpecField(
            "value_range",
            _value_range,
            "two numbers lo,hi with lo < hi, e.g. 0,1 or 0,255",
            "pixel range before normalization, e.g. 0,1 or 0,255",
            ("value_range",),
            True,
            lambda spec: _joined(spec["value_range"]),
            type="2 numbers",
        ),
        SpecField(
            "mean",
            _numbers,
            "one number per channel, e.g. 0.485,0.456,0.406",
            "per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406",
            ("mean",),
            True,
            lambda spec: _joined(spec["mean"]),
            type="1 or C numbers",
        ),
        SpecField(
            "std",
            _std,
            "positive numbers, one per channel, e.g. 0.229,0.224,0.225",
            "per-channel std divided by after scaling, e.g. 0.229,0.224,0.225",
            ("std",),
            True,
            lambda spec: _joined(spec["std"]),
            type="1 or C positive numbers",
        ),
        SpecField("channel_order", _channel_order, "RGB or BGR", "RGB or BGR", ("channel_order",), True, lambda spec: spec["channel_order"], type="RGB or BGR"),
        SpecField(
            "image_size",
            _image_size,
            "HEIGHT,WIDTH between 1 and 4096",
            "HEIGHT,WIDTH for models with a dynamic input size",
            ("height", "width"),
            True,
            lambda spec: f"{spec['height']},{spec['width']}",
            type="2 whole numbers",
        ),
        SpecField(
            "labels",
            _labels,
            "a JSON list of names or comma-separated names",
            "class names: a file with one per line, or comma-separated names",
            ("labels",),
            False,
            lambda spec: _joined(spec["labels"], ", "),
            type="list of names",
            lines=True,
        ),
        SpecField(
            "task",
            _task,
            "a task name such as classification, dense, detection, sequence or embedding",
            "what the output means: classification, dense, detection, sequence, embedding (or a plugin's task)",
            ("task",),
            False,
            lambda spec: spec["task"],
            type="name",
        ),
    )
}
"""Every spec field, in the order forms and help list them."""


def input_key(spec: ModelSpec) -> str:
    """The values of the spec fields that change what the model is fed: what verification (and everything else
    measured on the model's input, such as model-check findings) holds for."""
    return json.dumps([getattr(spec, attribute) for entry in SPEC_FIELDS.values() if entry.changes_input for attribute in entry.sets])


def spec_digest(spec: ModelSpec) -> str:
    """A digest of everything the spec says (not where its values came from): what results on the model depend on,
    such as the model checks' findings (a check may read the task or the labels as well as the input)."""
    settled = {key: value for key, value in asdict(spec).items() if key not in ("guessed", "sources")}
    return hashlib.sha256(json.dumps(settled, sort_keys=True, default=list).encode()).hexdigest()[:16]


def parse_field(key: str, raw: Any) -> Any:
    """Parse one spec field from metadata text, a CLI flag or a sidecar value; one sentence if it is wrong."""
    entry = SPEC_FIELDS.get(key)
    if entry is None:
        raise UserError(f"'{key}' is not a model spec field; use one of {', '.join(SPEC_FIELDS)}.", field=key)
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw.strip())
        except json.JSONDecodeError:
            value = raw.strip()
    try:
        return entry.parse(value)
    except (TypeError, ValueError, KeyError, OverflowError):
        raise UserError(f"spec field {key}={str(raw)[:60]!r} is not valid; give {entry.hint}.", field=key) from None


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Read spec overrides from a small JSON or TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read spec file {path.name}: {getattr(exc, 'strerror', None) or exc}.") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"spec file {path.name} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}.") from None
    if not isinstance(data, dict):
        raise UserError(f"spec file {path.name} must hold a table of spec fields ({', '.join(SPEC_FIELDS)}).")
    return data


GIVEN_BY_USER = "given by you"
METADATA = "the model's metadata"
INPUT_SHAPE = "the model's input shape"


def build_spec(
    input_name: str,
    input_dims: list[int | None],
    num_classes: int,
    metadata: dict[str, str],
    overrides: dict[str, Any],
    task: str = "classification",
    task_guessed: bool = True,
    convention: Convention | None = None,
) -> ModelSpec:
    """Combine what the user says, what the model says (metadata), what its producer's convention implies and
    what its shape suggests, in that order, recording each field's source and what is still a guess."""
    metadata = spec_metadata(metadata)
    given: dict[str, Any] = {}
    sources: dict[str, str] = {}
    settled: set[str] = set()  # fields the user, the metadata or a certain convention set

    def take(key: str, value: Any, source: str, certain: bool) -> None:
        given[key], sources[key] = value, source
        (settled.add if certain else settled.discard)(key)

    if convention is not None:
        for key, raw in convention.fields.items():
            take(key, parse_field(key, raw), convention.source if convention.certain else f"{convention.source}, a guess", convention.certain)
    for key in SPEC_FIELDS:
        if key in metadata:
            try:
                take(key, parse_field(key, metadata[key]), METADATA, True)
            except UserError:
                pass  # a malformed metadata value falls back to a convention or a guess, recorded below
    if "labels" not in settled and "character" in metadata:
        for key, value in _paddle_characters(metadata["character"], num_classes).items():
            take(key, value, f"{METADATA} (character)", True)
    for key, raw in overrides.items():
        if raw is not None:
            take(key, parse_field(key, raw), GIVEN_BY_USER, True)

    layout = given.get("layout") or guess_layout(input_dims)
    sources.setdefault("layout", "a guess from the input's shape")
    channel_axis, height_axis, width_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    channels = input_dims[channel_axis]
    if channels not in (1, 3, 4):
        raise UserError(
            f"input '{input_name}' has {channels} channels in {layout} layout; "
            "viz-server analyses image models with 1, 3 or 4 channels (set layout if it is guessed wrong).",
            field="layout",
        )
    height, width = input_dims[height_axis], input_dims[width_axis]
    if height and width:
        if "image_size" in settled and tuple(given["image_size"]) != (height, width):
            size = given["image_size"]
            raise UserError(f"image_size {size[0]}x{size[1]} contradicts the model's fixed input size {height}x{width}.", field="image_size")
        take("image_size", (height, width), INPUT_SHAPE, True)
    elif "image_size" in given:
        size = given["image_size"]
        if (height and height != size[0]) or (width and width != size[1]):
            raise UserError(f"image_size {size[0]}x{size[1]} contradicts the model's fixed input size {height}x{width}.", field="image_size")
        height, width = size
    else:
        height, width = height or DEFAULT_IMAGE_SIZE, width or DEFAULT_IMAGE_SIZE
        sources["image_size"] = "a guess: the model's input size is dynamic"

    value_range = given.get("value_range") or ((0.0, 255.0) if layout == "NHWC" else (0.0, 1.0))
    sources.setdefault("value_range", "a guess from the layout")
    mean, std = given.get("mean"), given.get("std")
    if mean is None and std is None:
        imagenet_like = layout == "NCHW" and channels == 3 and value_range == (0.0, 1.0)
        mean = IMAGENET_MEAN if imagenet_like else (0.0,)
        std = IMAGENET_STD if imagenet_like else (1.0,)
        guess = "a guess: ImageNet statistics" if imagenet_like else "a guess: none"
        sources["mean"], sources["std"] = guess, guess
    mean = _per_channel(mean or (0.0,), channels, "mean")
    std = _per_channel(std or (1.0,), channels, "std")
    sources.setdefault("channel_order", "a guess" if channels == 3 else "one colour channel order only")
    labels = given.get("labels", ())
    if labels and num_classes and len(labels) != num_classes:
        raise UserError(f"{len(labels)} labels were given but the model has {num_classes} outputs; give one label per output.", field="labels")
    sources.setdefault("labels", "none given: classes are shown by index")
    sources["task"] = GIVEN_BY_USER if "task" in overrides else (METADATA if not task_guessed else "a guess from the output's layout")

    guessed = [key for key in ("layout", "image_size", "value_range") if key not in settled]
    if not {"mean", "std"} & settled:
        guessed.append("normalization")
    if channels == 3 and "channel_order" not in settled:
        guessed.append("channel_order")
    if not labels:
        guessed.append("labels")
    if task_guessed:
        guessed.append("task")
    return ModelSpec(
        input_name=input_name,
        layout=layout,
        channels=channels,
        height=int(height),
        width=int(width),
        value_range=tuple(value_range),
        mean=mean,
        std=std,
        channel_order=given.get("channel_order", "RGB"),
        labels=tuple(labels),
        num_classes=num_classes,
        task=task,
        guessed=tuple(guessed),
        sources=tuple((key, sources[key]) for key in SPEC_FIELDS if key in sources),
    )


def guess_layout(input_dims: list[int | None]) -> str:
    """NCHW unless the last axis looks like channels and the second does not."""
    second, last = input_dims[1], input_dims[3]
    if last in (1, 3, 4) and second not in (1, 3, 4):
        return "NHWC"
    return "NCHW"


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise UserError(f"{name} has {len(values)} values but the model has {channels} channels; give one per channel.", field=name)
    return tuple(values)
