"""Encoding test pictures."""

import io

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def shapes_with_masks(count: int, seed: int) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """``count`` generated shapes (each wearing its own texture) as (name, PNG) pairs, and their object masks as PNG."""
    from viz_server_models import shapes

    data = shapes.make_dataset(count, seed=seed, congruent_fraction=1.0)
    images = [(f"{index}.png", png_bytes(picture)) for index, picture in enumerate(data.images)]
    return images, [png_bytes((mask * 255).astype(np.uint8)) for mask in data.masks]
