"""Class attributions read from forward passes alone, on onnxruntime: they run on every model onnxruntime runs,
the forward-only ones (control flow, an op nobody converts) included.

``ForwardAttribution`` is their base: a subclass implements ``perturbation_map(model, score, image, params, rng)``, where
``score(batch)`` gives the explained target's score for a model-space batch of altered copies of ``image``, and
gets everything a class attribution gets (mask and box, deletion and insertion curves, the ranking) plus a sanity
check that re-draws the ONNX initializers themselves (``sanity.InitializerCascade``), since the torch graph it
would otherwise randomize is not what these methods read.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from viz_server.techniques import Param
from viz_server_plugins.toolkit import sanity
from viz_server_plugins.toolkit.attribution import AttributionTechnique

BATCH_PARAM = Param("batch", "int", 32, "Altered copies evaluated per forward pass (memory vs speed).", minimum=1, maximum=512)
BASELINE_PARAM = Param(
    "baseline",
    "choice",
    "zero",
    "What replaces the removed pixels: zero in model space (Captum's default; the mean colour of a normalized model), black, or a blurred copy.",
    choices=("zero", "black", "blurred"),
)

Score = Callable[[np.ndarray], np.ndarray]


class ForwardAttribution(AttributionTechnique):
    """A class attribution from forward passes on onnxruntime; one map per image at input resolution."""

    runs_on = "runtime"
    map_kind = "map"

    def perturbation_map(self, model, score: Score, image: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
        """H x W: how much each pixel of ``image`` (one model-space image) supports the target, from ``score`` of
        altered copies (call it with batches of at most ``params["batch"]``). A method that reads other forward
        outputs (attention weights: ``attention_rollout``) overrides ``attribute`` instead."""
        raise NotImplementedError(f"{type(self).__name__} implements neither perturbation_map nor attribute")

    def outputs(self, model, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(model.predict(images.detach().cpu().numpy()))

    def attribute(self, model, images: torch.Tensor, objective, params: dict) -> torch.Tensor:
        objective.resolve(self.outputs(model, images))
        maps = []
        for index in range(len(images)):
            one = objective.take([index])

            def score(batch: np.ndarray, one=one) -> np.ndarray:
                return one.repeat(len(batch)).score(self.outputs(model, torch.from_numpy(np.ascontiguousarray(batch, np.float32)))).numpy()

            # the same draws for every image and every run: the sanity check compares like with like
            maps.append(self.perturbation_map(model, score, images[index].detach().cpu().numpy(), params, np.random.default_rng(0)))
        return torch.from_numpy(np.stack(maps).astype(np.float32))

    def to_map(self, raw: torch.Tensor, model, params: dict) -> np.ndarray:
        """The evidence for the target (the signed attribution stays in the result's ``attribution`` array)."""
        return np.maximum(raw.detach().cpu().numpy(), 0)

    def sanity_cascade(self, seed: int):
        return sanity.InitializerCascade(seed)


def in_batches(score: Score, altered: Callable[[int, int], np.ndarray], count: int, batch: int) -> np.ndarray:
    """``score`` of ``count`` altered copies made ``batch`` at a time by ``altered(start, stop)``."""
    return np.concatenate([score(altered(start, min(start + batch, count))) for start in range(0, count, batch)]) if count else np.zeros(0)


def blend(image: np.ndarray, covered: np.ndarray, keep: np.ndarray, layout: str) -> np.ndarray:
    """K copies of ``image`` (model space) with ``covered`` where the K x H x W ``keep`` masks are 0, mixed where
    they lie between 0 and 1."""
    mask = keep[:, None] if layout == "NCHW" else keep[..., None]
    return (image[None] * mask + covered[None] * (1 - mask)).astype(np.float32)


def fill(image: np.ndarray, kind: str, model) -> np.ndarray:
    """A reference picture for ``image`` (model space, same shape): ``zero`` (zero in model space, Captum's default
    baseline: a normalized model's mean colour), ``black``, ``blurred`` (a strong Gaussian blur of the image) or
    ``noise`` (uniform noise, the same draw for every image)."""
    if kind == "zero":
        return np.zeros_like(image)
    spec = model.spec
    unit = spec.model_to_unit(image[None])[0]
    if kind == "black":
        return spec.unit_to_model(np.zeros_like(unit)[None])[0].astype(image.dtype)
    if kind == "noise":
        return spec.unit_to_model(np.random.default_rng(0).random(unit.shape, np.float32)[None])[0].astype(image.dtype)
    from scipy import ndimage

    sigma = max(spec.height, spec.width) / 16
    return spec.unit_to_model(ndimage.gaussian_filter(unit, (sigma, sigma, 0))[None])[0].astype(image.dtype)
