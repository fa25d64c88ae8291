"""Turning arrays into pictures: one colour map for every heatmap in the project, overlays, PNG bytes."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

COLORMAP = "inferno"
"""The one colour map used across the project for heatmaps (perceptually uniform, colour-blind safe)."""


@lru_cache(maxsize=4)
def _lookup_table(name: str = COLORMAP) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def normalize_map(values: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its high percentile (so one hot pixel cannot wash it out)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    if top <= 0:
        top = float(values.max(initial=0.0))
    if top <= 0:
        return np.zeros_like(values)
    return np.clip(values / top, 0.0, 1.0)


def heatmap(values: np.ndarray) -> np.ndarray:
    """A 2-D map -> H x W x 3 uint8 in the project colour map."""
    scaled = normalize_map(values)
    return _lookup_table()[(scaled * 255.0).astype(np.uint8)]


def overlay(picture: np.ndarray, values: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a heatmap of ``values`` over an H x W x 3 uint8 picture, weighted by the map's strength."""
    colours = heatmap(values).astype(np.float32)
    if colours.shape[:2] != picture.shape[:2]:
        colours = np.asarray(Image.fromarray(colours.astype(np.uint8)).resize(picture.shape[1::-1]), np.float32)
        values = np.asarray(Image.fromarray(normalize_map(values).astype(np.float32)).resize(picture.shape[1::-1]))
    weight = alpha * np.sqrt(normalize_map(values))[..., None]
    blended = picture.astype(np.float32) * (1.0 - weight) + colours * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def png_bytes(picture: np.ndarray, min_side: int = 0) -> bytes:
    """Encode H x W (x 3) uint8 as PNG; small pictures are enlarged (nearest) to ``min_side`` for viewing."""
    image = Image.fromarray(np.ascontiguousarray(picture))
    if min_side and min(image.size) < min_side:
        factor = -(-min_side // min(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def map_artifacts(ctx, maps: np.ndarray, array: str, what: str, subjects: list[str]) -> list:
    """Input, heatmap and overlay artifacts for one 2-D map per input image, grouped by image.

    ``subjects`` says what each map explains, e.g. "class circle" or "neuron 3 of conv2".
    """
    from viz_server.techniques import Artifact

    pictures = ctx.display_images()
    artifacts = []
    for index, (picture, values) in enumerate(zip(pictures, maps)):
        name = ctx.image_names[index] if index < len(ctx.image_names) else f"image {index}"
        group = f"{index}: {name}"
        artifacts += [
            Artifact(f"input_{index}.png", f"{name} as the model sees it", data=png_bytes(picture, 128), array="inputs", group=group),
            Artifact(f"{array}_{index}.png", f"{what} for {subjects[index]}", data=png_bytes(heatmap(values), 128), array=array, group=group),
            Artifact(f"{array}_overlay_{index}.png", f"{what} over the image", data=png_bytes(overlay(picture, values), 128), array=array, group=group),
        ]
    return artifacts


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (plots are rendered to PNG bytes only)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def figure_png(figure) -> bytes:
    """Lay out, encode as PNG and close a matplotlib figure."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot().close(figure)
    return buffer.getvalue()
