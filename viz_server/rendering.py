"""Turning arrays into pictures: one colour map for every heatmap in the project, overlays, PNG bytes."""

from __future__ import annotations

import io
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from PIL import Image

COLORMAP = "inferno"
"""The one colour map used across the project for heatmaps (perceptually uniform, colour-blind safe)."""


@lru_cache(maxsize=4)
def _lookup_table(name: str = COLORMAP) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def map_scale(values: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """The values the colour map's ends stand for in ``normalize_map``'s picture: 0 and the high percentile."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    return 0.0, top if top > 0 else float(values.max(initial=0.0))


def normalize_map(values: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Scale a non-negative map to [0, 1] (float32) by its high percentile (so one hot pixel cannot wash it out)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    if top <= 0:
        top = float(values.max(initial=0.0))
    if top <= 0:
        return np.zeros_like(values)
    return np.clip(values * np.float32(1.0 / top), 0.0, 1.0)


def _palette_image(scaled: np.ndarray) -> Image.Image:
    """A [0, 1] map as a palette image in the project colour map."""
    image = Image.fromarray((scaled * 255.0).astype(np.uint8))
    image.putpalette(_lookup_table().tobytes())
    return image


def heatmap(values: np.ndarray) -> np.ndarray:
    """A 2-D map -> H x W x 3 uint8 in the project colour map."""
    return np.asarray(_palette_image(normalize_map(values)).convert("RGB"))


def overlay(picture: np.ndarray, values: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a heatmap of ``values`` over an H x W x 3 uint8 picture, weighted by the map's strength."""
    scaled = normalize_map(values)
    if scaled.shape != picture.shape[:2]:
        resized = Image.fromarray(scaled).resize(picture.shape[1::-1], Image.Resampling.BILINEAR)
        scaled = np.clip(np.asarray(resized), 0.0, 1.0)
    colours = np.asarray(_palette_image(scaled).convert("RGB"))
    weight = (np.float32(alpha) * np.sqrt(scaled))[..., None]
    blended = picture + (colours.astype(np.float32) - picture) * weight
    return (blended + 0.5).clip(0, 255).astype(np.uint8)


def png_bytes(picture: np.ndarray, min_side: int = 0) -> bytes:
    """Encode H x W (x 3) uint8 as PNG; small pictures are enlarged (nearest) to ``min_side`` for viewing."""
    return _encode(Image.fromarray(np.ascontiguousarray(picture)), min_side)


def heatmap_png(values: np.ndarray, min_side: int = 0) -> bytes:
    """``png_bytes(heatmap(values))`` as a palette PNG: the same pixels from a third of the data to encode."""
    return _encode(_palette_image(normalize_map(values)), min_side)


def _encode(image: Image.Image, min_side: int) -> bytes:
    if min_side and min(image.size) < min_side:
        factor = -(-min_side // min(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    # zlib's run-length strategy at level 1: a third faster than the default, files within 5% of level 6
    image.save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def render_each(render, items) -> list:
    """``[render(item) for item in items]`` on a few threads: PNG encoding and numpy release the GIL, so a
    batch of pictures renders about as many times faster as there are cores."""
    items = list(items)
    if len(items) < 2:
        return [render(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(render, items))


def input_artifact(index: int) -> str:
    """The name of the artifact ``map_artifacts`` makes of input image ``index`` (its group is that image's)."""
    return f"input_{index}.png"


def map_artifacts(ctx, maps: np.ndarray, array: str, what: str, subjects: list[str]) -> list:
    """Input, heatmap and overlay artifacts for one 2-D map per input image, grouped by image.

    ``subjects`` says what each map explains, e.g. "class circle" or "neuron 3 of conv2".
    """
    from viz_server.techniques import Artifact

    pictures = ctx.display_images()

    def render(index: int) -> list:
        picture, values = pictures[index], maps[index]
        name = ctx.image_names[index] if index < len(ctx.image_names) else f"image {index}"
        group = f"{index}: {name}"
        return [
            Artifact(input_artifact(index), f"{name} as the model sees it", data=png_bytes(picture, 128), array="inputs", group=group),
            Artifact(f"{array}_{index}.png", f"{what} for {subjects[index]}", data=heatmap_png(values, 128), array=array, group=group, scale=map_scale(values)),
            Artifact(
                f"{array}_overlay_{index}.png",
                f"{what} over the image",
                data=png_bytes(overlay(picture, values), 128),
                array=array,
                group=group,
                scale=map_scale(values),
            ),
        ]

    return [artifact for group in render_each(render, range(min(len(pictures), len(maps)))) for artifact in group]


@lru_cache(maxsize=2)
def _caption_font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _fitted_lines(draw, caption: str, font, width: int, most: int = 3) -> list[str]:
    """``caption``'s lines (split at ``\n``) wrapped at spaces to ``width`` pixels; at most ``most`` lines, a line
    still too long cut with an ellipsis."""
    lines: list[str] = []
    for paragraph in caption.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            trial = f"{current} {word}".strip()
            if current and draw.textlength(trial, font=font) > width:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    fitted = []
    for line in lines[:most]:
        if draw.textlength(line, font=font) > width:
            while len(line) > 1 and draw.textlength(line + "…", font=font) > width:
                line = line[:-1]
            line = line.rstrip() + "…"
        fitted.append(line)
    return fitted


def captioned_grid(tiles: list[tuple[np.ndarray, str]], columns: int = 6, tile_side: int = 150, font_size: int = 11) -> bytes:
    """PNG of H x W x 3 uint8 pictures in a grid, each under its caption (wrapped; ``\n`` breaks a line): the
    picture matplotlib's subplots would draw, at a small fraction of the time."""
    from PIL import ImageDraw

    font = _caption_font(font_size)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [_fitted_lines(measure, caption, font, tile_side) for _, caption in tiles]
    caption_height = max((len(lines) for lines in captions), default=1) * (font_size + 3) + 4
    canvas = Image.new("RGB", (columns * (tile_side + 8) + 8, rows * (tile_side + caption_height + 8) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for index, ((picture, _), lines) in enumerate(zip(tiles, captions)):
        row, column = divmod(index, columns)
        left, top = 8 + column * (tile_side + 8), 8 + row * (tile_side + caption_height + 8)
        for number, line in enumerate(lines):
            width = draw.textlength(line, font=font)
            draw.text((left + (tile_side - width) / 2, top + number * (font_size + 3)), line, fill="black", font=font)
        image = Image.fromarray(np.ascontiguousarray(picture))
        scale = tile_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.NEAREST)
        canvas.paste(image, (left + (tile_side - image.width) // 2, top + caption_height))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


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
