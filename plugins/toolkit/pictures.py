"""Pictures techniques lay out themselves: grids of tiles, linear 0-255 scaling, signed images on grey.

Heatmaps, overlays and PNG encoding are the core's (``viz_server.rendering``): one colour map everywhere.
"""

from __future__ import annotations

import numpy as np


def scale(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linear map to 0-255: ``low`` (default: the minimum) -> 0, ``high`` (default: the maximum) -> 255."""
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high - low < 1e-12:
        return np.full(values.shape, 128, np.uint8)
    return np.clip((values - low) / (high - low) * 255 + 0.5, 0, 255).astype(np.uint8)


def grid(tiles: list[np.ndarray], columns: int | None = None, gap: int = 1, most: int = 16) -> np.ndarray:
    """Tiles (H x W or H x W x 3, uint8) laid out on a white grid; without ``columns``, as many (at most ``most``)
    as make the grid about square, so wide maps (a 48 x 192 text line) wrap instead of becoming a strip."""
    tiles = [tile if tile.ndim == 3 else np.repeat(tile[..., None], 3, axis=2) for tile in tiles]
    height, width = tiles[0].shape[:2]
    if columns is None:
        columns = int(min(most, len(tiles), max(1, round(np.sqrt(len(tiles) * height / width)))))
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        canvas[top : top + height, left : left + width] = tile
    return canvas


def signed_picture(values: np.ndarray, layout: str) -> np.ndarray:
    """A signed image (C x H x W or H x W x C; e.g. a gradient) -> H x W x 3 uint8 centred on grey, as in the papers."""
    values = values if layout == "NHWC" else values.transpose(1, 2, 0)
    magnitude = float(np.abs(values).max()) or 1.0
    picture = np.clip(0.5 + values / (2 * magnitude), 0, 1)
    if picture.shape[2] == 1:
        picture = np.repeat(picture, 3, axis=2)
    return (picture[..., :3] * 255 + 0.5).astype(np.uint8)


def amplified(perturbation: np.ndarray) -> np.ndarray:
    """A signed perturbation (H x W x C) scaled to fill [0, 1] around grey, so that a tiny one becomes visible."""
    magnitude = float(np.abs(perturbation).max()) or 1.0
    return np.clip(0.5 + perturbation / (2 * magnitude), 0, 1)
