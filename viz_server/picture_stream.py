"""Labeled image sets of any size for techniques that read a whole set (``inputs = ("dataset",)``).

Pictures are decoded and preprocessed chunk by chunk as a technique walks them, so memory holds one chunk however
large the set is; the bytes behind them may sit in memory or be read from the store on access (``Deferred``).

A per-picture work registered with ``per_picture`` (e.g. the model's scores) is asked for with ``rows``: computed
here chunk by chunk, or, where the job runner attaches a ``spread`` (``jobs.shards``), split into shards of whole
chunks that other processes run, with the same rows bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from viz_server.model.images import decode_image
from viz_server.model.verify import check_inputs

CHUNK = 64
"""Pictures decoded at once: enough to keep the model busy, few enough to bound memory on large models."""

PictureWork = Callable[[Any, "Chunk"], np.ndarray]
WORKS: dict[str, PictureWork] = {}
"""Registered per-picture works by name: ``work(model, chunk)`` -> one row per picture of the chunk."""


def per_picture(name: str) -> Callable[[PictureWork], PictureWork]:
    """Register ``work(model, chunk) -> array`` (one row per picture) under ``name`` so that ``PictureStream.rows``
    can split it over processes. It must depend on nothing but the model and the chunk's pictures."""

    def register(work: PictureWork) -> PictureWork:
        WORKS[name] = work
        return work

    return register


class Deferred(Sequence):
    """Items made on access, ``read(index)``, where ``present[index]``; None elsewhere (e.g. a picture's bytes read
    from the store only when its chunk is decoded, or a mask only where the picture has one)."""

    def __init__(self, present: Sequence[bool], read: Callable[[int], Any], names: Sequence[str] | None = None, digests: Sequence[str] | None = None):
        self.present, self.read = list(present), read
        self.names = list(names) if names is not None else None  # for pictures: their names, known without reading them
        self.digests = list(digests) if digests is not None else None  # and the SHA-256 of their bytes

    def __len__(self) -> int:
        return len(self.present)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.read(index) if self.present[index] else None


@dataclass
class Chunk:
    """Consecutive pictures of a set: their ``indices`` into it, the images in model space, labels and masks."""

    indices: np.ndarray
    images: torch.Tensor
    labels: list[str | None]
    masks: list[np.ndarray | None]  # H x W bool object masks at the model's resolution, where given


class PictureStream:
    """A labeled picture set decoded on demand: ``names``, ``labels``, ``has_mask``, ``chunks()``, ``take()``."""

    def __init__(
        self,
        model,
        pictures: Sequence[tuple[str, bytes]],
        labels: Sequence[str | None],
        masks: Sequence[bytes | None] | None = None,
        spread: Callable[..., np.ndarray] | None = None,
    ):
        self.model = model
        self.spread = spread  # spread(stream, work, on_progress) -> rows: the job runner's way to split a work
        self.pictures = pictures
        self.names = picture_names(pictures)
        self.labels = list(labels)
        self.masks = masks
        self.has_mask = masks_given(masks, len(self.names))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def digest(self) -> str:
        """What the set holds, as one SHA-256: every picture's bytes (or their stored digests), label and mask flag
        in order; work keyed by it (with the model) is the same work."""
        if not hasattr(self, "_digest"):
            known = getattr(self.pictures, "digests", None)
            parts = known if known is not None else [hashlib.sha256(data).hexdigest() for _, data in self.pictures]
            self._digest = hashlib.sha256(repr((parts, self.labels, self.has_mask)).encode()).hexdigest()
        return self._digest

    def rows(self, work: str, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The rows of the registered per-picture ``work`` for every picture, in order (``on_progress(done, total)``
        as pictures are done)."""
        if work not in WORKS:
            raise KeyError(f"no per-picture work named {work!r}")
        if self.spread is not None:
            return self.spread(self, work, on_progress)
        return self.compute(work, 0, len(self), on_progress)

    def compute(self, work: str, start: int, stop: int, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The rows of ``work`` for pictures ``start``..``stop``, here, chunk by chunk from ``start``: a slice that
        starts at a whole chunk gives the model the batches a whole-set pass gives it."""
        parts = []
        for chunk in self.chunks(indices=np.arange(start, stop)):
            parts.append(np.asarray(WORKS[work](self.model, chunk)))
            if on_progress is not None:
                on_progress(int(chunk.indices[-1]) + 1 - start, stop - start)
        return np.concatenate(parts) if parts else np.zeros((0,))

    def chunks(self, size: int = CHUNK, indices: Sequence[int] | np.ndarray | None = None) -> Iterator[Chunk]:
        """The pictures (all, or ``indices`` in their order), ``size`` at a time."""
        order = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        for start in range(0, len(order), size):
            yield self.take(order[start : start + size])

    def take(self, indices: Sequence[int] | np.ndarray) -> Chunk:
        """These pictures, decoded and preprocessed (one sentence naming a picture that cannot be read)."""
        order = np.asarray(indices, np.int64)
        spec = self.model.spec
        batch = torch.from_numpy(
            spec.preprocess([decode_image(self.pictures[int(index)][1], self.names[int(index)], fit=(spec.height, spec.width)) for index in order])
        )
        check_inputs(self.model, batch.numpy())
        masks = []
        for index in order:
            data = self.masks[int(index)] if self.masks is not None and self.has_mask[int(index)] else None
            masks.append(spec.picture_to_mask(decode_image(data, f"mask of {self.names[int(index)]}", fit=(spec.height, spec.width))) if data else None)
        return Chunk(order, batch, [self.labels[int(index)] for index in order], masks)


def picture_names(pictures: Sequence[tuple[str, bytes]]) -> list[str]:
    """The names of (name, bytes) pictures, without reading deferred ones."""
    names = getattr(pictures, "names", None)
    return list(names) if names is not None else [name for name, _ in pictures]


def masks_given(masks: Sequence[bytes | None] | None, count: int) -> list[bool]:
    """Which pictures have an object mask, without reading deferred ones."""
    if masks is None:
        return [False] * count
    present = getattr(masks, "present", None)
    return list(present) if present is not None else [mask is not None for mask in masks]
